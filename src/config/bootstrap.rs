//! First start: creates the data directory (0700), a local TLS CA and server certificate
//! (keys 0600), and the admin token (0600, printed once by the caller). Later starts reuse them;
//! the server certificate is re-issued from the same CA when the public host name changes.

use super::{CaSource, ServeConfig, TlsSource};
use crate::pki::DeviceCa;
use crate::vocab::fs::write_private_file;
use anyhow::{bail, Context as _};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `prepare` made ready for the server.
pub struct Prepared {
    pub tls: Arc<rustls::ServerConfig>,
    pub admin_token: String,
    /// Set when the token was generated on this start: the caller prints it once.
    pub new_admin_token_file: Option<PathBuf>,
    /// The CA clients must trust when the certificate was generated.
    pub generated_ca: Option<PathBuf>,
    /// The device certificate authority (SCEP issuer, identity checks).
    pub device_ca: Arc<DeviceCa>,
    /// PEM of the HTTPS chain's root when it is our generated one: enrollment profiles carry it
    /// so devices trust the server.
    pub tls_root_pem: Option<Vec<u8>>,
    /// The HTTPS certificate chain and key, for signing enrollment profiles (when configured).
    pub profile_signer: Option<Arc<crate::pki::ProfileSigner>>,
    /// The same signer, for declared profiles with `spec.sign: true`.
    pub signer: Arc<crate::pki::ProfileSigner>,
}

pub fn prepare(config: &ServeConfig) -> anyhow::Result<Prepared> {
    create_private_dir(&config.data_dir)?;
    let (chain_pem, key_pem, generated_ca) = match &config.tls {
        TlsSource::Files { cert, key } => (
            std::fs::read(cert).with_context(|| format!("reading tls_cert {}", cert.display()))?,
            std::fs::read(key).with_context(|| format!("reading tls_key {}", key.display()))?,
            None,
        ),
        TlsSource::Generated => {
            let dir = config.data_dir.join("tls");
            let (chain, key, ca) = ensure_generated_tls(&dir, config.public_host())?;
            (chain, key, Some(ca))
        }
    };
    let device_ca = match &config.device_ca {
        CaSource::Generated => {
            let dir = config.data_dir.join("ca");
            create_private_dir(&dir)?;
            DeviceCa::load_or_create(&dir, config.device_cert_days)
        }
        CaSource::Files { cert, key } => DeviceCa::load(cert, key, config.device_cert_days),
    }
    .context("device certificate authority")?;
    let ca_subject = device_ca
        .certificate()
        .subject_name()
        .to_der()
        .context("device CA subject")?;
    let tls = server_tls_config(&chain_pem, &key_pem, Some(ca_subject))?;
    let tls_root_pem = match &generated_ca {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let signer = Arc::new(
        crate::pki::ProfileSigner::from_pem(&chain_pem, &key_pem).map_err(|e| {
            anyhow::anyhow!("the HTTPS certificate and key cannot sign profiles: {e}")
        })?,
    );
    let profile_signer = config.enrollment.sign_profiles.then(|| signer.clone());
    let (admin_token, new_admin_token_file) = admin_token(config)?;
    Ok(Prepared {
        profile_signer,
        signer,
        tls,
        admin_token,
        new_admin_token_file,
        generated_ca,
        device_ca: Arc::new(device_ca),
        tls_root_pem,
    })
}

fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .with_context(|| format!("creating data directory {}", path.display()))
}

/// Builds a rustls server configuration (ring provider) from PEM chain and key. With a device
/// CA subject, clients are asked (not required) for a certificate from that CA.
pub fn server_tls_config(
    chain_pem: &[u8],
    key_pem: &[u8],
    device_ca_subject: Option<Vec<u8>>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = rustls_pemfile::certs(&mut &chain_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .context("TLS certificate file is not valid PEM")?;
    if chain.is_empty() {
        bail!("TLS certificate file holds no CERTIFICATE block");
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .context("TLS key file is not valid PEM")?
        .context("TLS key file holds no private key")?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?;
    let builder = match device_ca_subject {
        Some(subject) => builder.with_client_cert_verifier(Arc::new(
            crate::server::tls::OptionalClientCert::new(subject),
        )),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("TLS certificate and key do not match or are unsupported")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // TLS 1.3 session tickets: a device reconnecting (every wake-up after its last connection
    // closed) resumes its session instead of a full handshake with its certificate signature.
    // The ticket carries the client certificate, which `identity.rs` checks on every request as
    // before (standing and revocation come from the store each time). Stateless: the server
    // keeps nothing per device; the ticket key rotates every few hours.
    config.ticketer = rustls::crypto::ring::Ticketer::new().context("TLS session tickets")?;
    Ok(Arc::new(config))
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Pomona local TLS CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Pomona");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2044, 1, 1);
    params
}

/// Returns (server chain PEM, server key PEM, CA path), creating what is missing.
fn ensure_generated_tls(
    dir: &Path,
    public_host: &str,
) -> anyhow::Result<(Vec<u8>, Vec<u8>, PathBuf)> {
    create_private_dir(dir)?;
    let ca_cert_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca-key.pem");
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server-key.pem");
    let hosts_path = dir.join("server-hosts");

    let ca_key = if ca_key_path.exists() {
        KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path)?)
            .context("reading tls/ca-key.pem")?
    } else {
        let key = KeyPair::generate().context("generating the TLS CA key")?;
        write_private_file(&ca_key_path, key.serialize_pem().as_bytes())?;
        let _ = std::fs::remove_file(&ca_cert_path);
        key
    };
    // The CA is re-created from fixed parameters and its stored key: same subject, same key, so
    // certificates issued now verify against the ca.pem clients already trust.
    let ca = ca_params()
        .self_signed(&ca_key)
        .context("self-signing the TLS CA")?;
    if !ca_cert_path.exists() {
        std::fs::write(&ca_cert_path, ca.pem())?;
    }

    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if !public_host.is_empty() && !hosts.iter().any(|h| h == public_host) {
        hosts.push(public_host.to_string());
    }
    let wanted = hosts.join("\n");
    let current = std::fs::read_to_string(&hosts_path).unwrap_or_default();
    if current != wanted || !cert_path.exists() || !key_path.exists() {
        let key = KeyPair::generate().context("generating the TLS server key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(
            DnType::CommonName,
            hosts.last().cloned().unwrap_or_default(),
        );
        params.subject_alt_names = hosts
            .iter()
            .map(|h| match h.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => h.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()
            .context("public_url host is not a valid DNS name")?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(397);
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .context("issuing the TLS server certificate")?;
        let chain = format!("{}{}", cert.pem(), ca.pem());
        std::fs::write(&cert_path, &chain)?;
        write_private_file(&key_path, key.serialize_pem().as_bytes())?;
        std::fs::write(&hosts_path, &wanted)?;
        tracing::info!(hosts = %hosts.join(", "), "issued TLS server certificate from the local CA");
    }
    Ok((
        std::fs::read(&cert_path)?,
        std::fs::read(&key_path)?,
        ca_cert_path,
    ))
}

fn admin_token(config: &ServeConfig) -> anyhow::Result<(String, Option<PathBuf>)> {
    if let Some(path) = &config.admin_token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("reading admin token file {}", path.display()))?;
        return Ok((token.trim().to_string(), None));
    }
    let path = config.data_dir.join("admin-token");
    if path.exists() {
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return Ok((token.trim().to_string(), None));
    }
    let token = random_token();
    write_private_file(&path, format!("{token}\n").as_bytes())?;
    Ok((token, Some(path)))
}

/// 256 bits from the operating system's generator, hex encoded.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom(&mut bytes);
    hex::encode(bytes)
}

fn getrandom(buf: &mut [u8]) {
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(buf)
        .expect("the operating system random generator failed");
}
