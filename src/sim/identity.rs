//! How a simulated device gets its identity, the way an iPhone does: download an enrollment
//! profile (with a one-time enrollment token obtained through the admin API, or a given
//! profile), generate a key, send a SCEP PKCSReq with the profile's challenge, and from then on
//! present the issued certificate as TLS client certificate and/or sign each message
//! (`Mdm-Signature`) as the profile says. Uses `protocol` and `pki`, never server code.

use crate::pki::{ca::self_signed_requester, scep, signature};
use crate::protocol::enrollment_profile::{self, EnrollmentInstructions};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use std::time::Duration;

/// Where a device's enrollment profile comes from.
#[derive(Clone)]
pub enum ProfileSource {
    /// Ask the admin API for a one-time enrollment token, then download `/enroll` with it.
    AdminToken(String),
    /// A profile already in hand (e.g. with a static SCEP challenge).
    Profile(Vec<u8>),
}

/// A device identity: the issued certificate, its key, and the client that presents it.
pub struct SimIdentity {
    pub certificate: X509,
    pub key: PKey<Private>,
    /// Presents the certificate in the TLS handshake.
    pub tls_client: reqwest::Client,
    pub instructions: EnrollmentInstructions,
}

impl SimIdentity {
    /// The same identity talking to a server that moved to another base URL (tests restart
    /// servers on new ports; a real device would need a new profile for a new ServerURL).
    pub fn moved_to(&self, old_base: &str, new_base: &str) -> SimIdentity {
        let mut instructions = self.instructions.clone();
        instructions.server_url = instructions.server_url.replace(old_base, new_base);
        instructions.checkin_url = instructions
            .checkin_url
            .map(|u| u.replace(old_base, new_base));
        instructions.scep_url = instructions.scep_url.replace(old_base, new_base);
        SimIdentity {
            certificate: self.certificate.clone(),
            key: self.key.clone(),
            tls_client: self.tls_client.clone(),
            instructions,
        }
    }

    /// The `Mdm-Signature` header value for `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        signature::sign_mdm_body(body, &self.certificate, &self.key)
            .expect("signing with our own key works")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("enrollment: {0}")]
pub struct EnrollError(pub String);

/// Fetches the enrollment profile as described by `source`.
pub async fn fetch_profile(
    client: &reqwest::Client,
    server: &str,
    source: &ProfileSource,
) -> Result<Vec<u8>, EnrollError> {
    let token = match source {
        ProfileSource::Profile(bytes) => return Ok(bytes.clone()),
        ProfileSource::AdminToken(token) => token,
    };
    let response = client
        .post(format!("{server}/api/v1/enrollment-tokens"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| EnrollError(format!("requesting an enrollment token: {e}")))?;
    let status = response.status();
    let json: serde_json::Value = response.json().await.unwrap_or_default();
    let url = json["enroll_url"].as_str().ok_or_else(|| {
        EnrollError(format!(
            "requesting an enrollment token: HTTP {status}: {}",
            json["error"]
        ))
    })?;
    body_of(
        client.get(url).send().await,
        "downloading the enrollment profile",
    )
    .await
}

/// The body of a successful response; transport failures and non-2xx answers become errors
/// that say what was being done.
async fn body_of(
    sent: Result<reqwest::Response, reqwest::Error>,
    what: &str,
) -> Result<Vec<u8>, EnrollError> {
    let response = sent.map_err(|e| EnrollError(format!("{what}: {e}")))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| EnrollError(format!("{what}: {e}")))?;
    if !status.is_success() {
        return Err(EnrollError(format!(
            "{what}: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).trim()
        )));
    }
    Ok(bytes.to_vec())
}

/// Installs a profile: SCEP enrollment, then a TLS client presenting the new identity and
/// trusting the profile's root certificates (plus `extra_root_pem`, the server CA the
/// simulator was told to trust). `idle_timeout` is how long that client keeps an idle
/// connection to the server open (None: reqwest's default, 90 s).
pub async fn install_profile(
    client: &reqwest::Client,
    profile: &[u8],
    common_name: &str,
    extra_root_pem: Option<&[u8]>,
    pregenerated_key: Option<PKey<Private>>,
    idle_timeout: Option<Duration>,
) -> Result<SimIdentity, EnrollError> {
    let profile =
        crate::pki::unwrap_signed_profile(profile).map_err(|e| EnrollError(e.to_string()))?;
    let instructions =
        enrollment_profile::read(&profile).map_err(|e| EnrollError(e.to_string()))?;
    let bits = instructions.key_size.max(2048);
    let key = match pregenerated_key {
        Some(key) => key,
        None => generate_key(bits)?,
    };
    let certificate = scep_enroll(client, &instructions, &key, common_name).await?;

    let mut pem = certificate
        .to_pem()
        .map_err(|e| EnrollError(e.to_string()))?;
    pem.extend(
        key.private_key_to_pem_pkcs8()
            .map_err(|e| EnrollError(e.to_string()))?,
    );
    let identity = reqwest::Identity::from_pem(&pem)
        .map_err(|e| EnrollError(format!("identity not usable for TLS: {e}")))?;
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(30))
        .identity(identity);
    if let Some(idle) = idle_timeout {
        builder = builder.pool_idle_timeout(idle);
    }
    for der in &instructions.trusted_roots {
        let root = reqwest::Certificate::from_der(der)
            .map_err(|e| EnrollError(format!("profile root certificate: {e}")))?;
        builder = builder.add_root_certificate(root);
    }
    if let Some(pem) = extra_root_pem {
        let root = reqwest::Certificate::from_pem(pem)
            .map_err(|e| EnrollError(format!("server CA: {e}")))?;
        builder = builder.add_root_certificate(root);
    }
    let tls_client = builder.build().map_err(|e| EnrollError(e.to_string()))?;
    Ok(SimIdentity {
        certificate,
        key,
        tls_client,
        instructions,
    })
}

/// An RSA key as the profile's Keysize asks (the expensive part of enrolling, ~0.1 s).
pub fn generate_key(bits: u32) -> Result<PKey<Private>, EnrollError> {
    let rsa = openssl::rsa::Rsa::generate(bits).map_err(|e| EnrollError(e.to_string()))?;
    PKey::from_rsa(rsa).map_err(|e| EnrollError(e.to_string()))
}

/// GetCACaps, GetCACert, then PKIOperation (POST), as iOS does.
async fn scep_enroll(
    client: &reqwest::Client,
    instructions: &EnrollmentInstructions,
    key: &PKey<Private>,
    common_name: &str,
) -> Result<X509, EnrollError> {
    let url = &instructions.scep_url;
    let caps = get_bytes(client, &format!("{url}?operation=GetCACaps")).await?;
    let caps = String::from_utf8_lossy(&caps);
    if !caps.lines().any(|l| l.trim() == "POSTPKIOperation") {
        return Err(EnrollError(
            "SCEP server does not offer POSTPKIOperation".into(),
        ));
    }
    let ca_der = get_bytes(client, &format!("{url}?operation=GetCACert")).await?;
    let ca = X509::from_der(&ca_der)
        .map_err(|_| EnrollError("GetCACert did not return a DER certificate".into()))?;
    let csr = scep::build_csr(key, common_name, instructions.challenge.as_deref())
        .map_err(|e| EnrollError(e.to_string()))?;
    let requester =
        self_signed_requester(key, common_name).map_err(|e| EnrollError(e.to_string()))?;
    let transaction = uuid::Uuid::new_v4().simple().to_string();
    let nonce = uuid::Uuid::new_v4().into_bytes();
    let message = scep::encode_request(&csr, &requester, key, &ca, &transaction, &nonce)
        .map_err(|e| EnrollError(e.to_string()))?;
    let body = body_of(
        client
            .post(format!("{url}?operation=PKIOperation"))
            .header("Content-Type", "application/x-pki-message")
            .body(message)
            .send()
            .await,
        "SCEP PKIOperation",
    )
    .await?;
    match scep::decode_cert_rep(&body, &ca, &requester, key) {
        Ok(Ok(der)) => X509::from_der(&der).map_err(|e| EnrollError(e.to_string())),
        Ok(Err(failure)) => Err(EnrollError(format!("SCEP FAILURE: {failure}"))),
        Err(e) => Err(EnrollError(e.to_string())),
    }
}

async fn get_bytes(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, EnrollError> {
    body_of(client.get(url).send().await, &format!("GET {url}")).await
}
