//! Server configuration: flags, environment variables and a TOML config file merged into one
//! typed `ServeConfig`, validated once (every problem reported together), plus the first-start
//! set-up of the data directory (TLS certificate, admin token).
//!
//! Precedence: command-line flag or its environment variable, then the config file, then the
//! default. The library never reads the environment itself; `clap` does it at the edge.

pub mod bootstrap;

use crate::server::settings::{EnrollAccess, EnrollmentSettings, Limits};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Values as given on the command line or in the environment (all optional).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML file with the same keys as these flags (listen, data_dir, database, …).
    #[arg(long, env = "POMONA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on for HTTPS (default 0.0.0.0:8443).
    #[arg(long, env = "POMONA_LISTEN")]
    pub listen: Option<String>,
    /// Directory for the database, generated TLS certificate and admin token (default ./pomona-data).
    #[arg(long, env = "POMONA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://… (default: SQLite in the data directory).
    #[arg(long, env = "POMONA_DATABASE")]
    pub database: Option<String>,
    /// PEM certificate chain for HTTPS (default: generated into the data directory).
    #[arg(long, env = "POMONA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "POMONA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The https:// URL devices use to reach this server (default https://localhost:<port>).
    #[arg(long, env = "POMONA_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// File holding the admin API token (default: generated into the data directory).
    #[arg(long, env = "POMONA_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Policy directory (default ./policies).
    #[arg(long, env = "POMONA_POLICY_DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Largest request body accepted, in bytes (default 10 MiB).
    #[arg(long, env = "POMONA_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<u64>,
    /// Seconds allowed to read request headers and body (default 30).
    #[arg(long, env = "POMONA_READ_TIMEOUT_SECS")]
    pub read_timeout_secs: Option<u64>,
    /// PEM certificate of the device CA (default: generated into <data-dir>/ca/).
    #[arg(long, env = "POMONA_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM private key (RSA) of the device CA, e.g. from a mounted Secret.
    #[arg(long, env = "POMONA_CA_KEY")]
    pub ca_key: Option<PathBuf>,
    /// Validity of issued device identity certificates, in days (default 365).
    #[arg(long, env = "POMONA_DEVICE_CERT_DAYS")]
    pub device_cert_days: Option<u32>,
    /// File holding a static SCEP challenge (default: one-time challenges only).
    #[arg(long, env = "POMONA_SCEP_CHALLENGE_FILE")]
    pub scep_challenge_file: Option<PathBuf>,
    /// Lifetime of one-time SCEP challenges in seconds (default 3600).
    #[arg(long, env = "POMONA_CHALLENGE_TTL_SECS")]
    pub challenge_ttl_secs: Option<u64>,
    /// Lifetime of one-time enrollment tokens in seconds (default 604800, a week).
    #[arg(long, env = "POMONA_ENROLLMENT_TOKEN_TTL_SECS")]
    pub enrollment_token_ttl_secs: Option<u64>,
    /// Who may download /enroll: "token" (a one-time enrollment token or the admin token,
    /// default) or "admin" (the admin token only).
    #[arg(long, env = "POMONA_ENROLL_ACCESS")]
    pub enroll_access: Option<String>,
    /// Ask devices to sign every message (Mdm-Signature), e.g. behind a TLS-terminating proxy.
    #[arg(long, env = "POMONA_SIGN_MESSAGE")]
    pub sign_message: Option<bool>,
    /// Sign enrollment profiles (CMS) with the HTTPS certificate, so devices show them as
    /// verified when that certificate is publicly trusted.
    #[arg(long, env = "POMONA_SIGN_PROFILES")]
    pub sign_profiles: Option<bool>,
    /// Address or CIDR range of a TLS-terminating proxy whose RFC 9440 Client-Cert header is
    /// trusted (repeatable; comma-separated in the environment).
    #[arg(
        long = "trusted-proxy",
        env = "POMONA_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,
    /// Organization name shown in enrollment profiles (default "Pomona").
    #[arg(long, env = "POMONA_ORGANIZATION")]
    pub organization: Option<String>,
    /// First delay before re-sending a profile a device refused, in milliseconds; doubles per
    /// attempt up to an hour (default 60000).
    #[arg(long, env = "POMONA_RETRY_BACKOFF_MS")]
    pub retry_backoff_ms: Option<u64>,
    /// Attempts before a profile is marked Failed on a device (default 5).
    #[arg(long, env = "POMONA_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// How often each device is asked for its ProfileList to catch drift, in seconds
    /// (default 14400, four hours).
    #[arg(long, env = "POMONA_INVENTORY_INTERVAL_SECS")]
    pub inventory_interval_secs: Option<u64>,
    /// Paces rollouts: at most this many devices with profile installs outstanding at once
    /// after a policy change; the others wait their turn (default 5000; 0 = no limit).
    #[arg(long, env = "POMONA_ROLLOUT_MAX_DEVICES")]
    pub rollout_max_devices: Option<usize>,
    /// MDM push certificate, PEM (from the Apple Push Certificates Portal). Enables APNs push.
    #[arg(long, env = "POMONA_PUSH_CERT")]
    pub push_cert: Option<PathBuf>,
    /// PEM private key of --push-cert (default: looked for in the --push-cert file).
    #[arg(long, env = "POMONA_PUSH_KEY")]
    pub push_key: Option<PathBuf>,
    /// MDM push certificate and key as PKCS#12 (instead of --push-cert).
    #[arg(long, env = "POMONA_PUSH_P12")]
    pub push_p12: Option<PathBuf>,
    /// File holding the --push-p12 password.
    #[arg(long, env = "POMONA_PUSH_P12_PASSWORD_FILE")]
    pub push_p12_password_file: Option<PathBuf>,
    /// APNs endpoint: production (default), sandbox, or an https:// URL (tests, proxies).
    #[arg(long, env = "POMONA_PUSH_ENDPOINT")]
    pub push_endpoint: Option<String>,
    /// Extra PEM CA certificate(s) trusted for the APNs endpoint (test servers, proxies).
    #[arg(long, env = "POMONA_PUSH_CA")]
    pub push_ca: Option<PathBuf>,
    /// Enqueues within this window become one push (default 1s).
    #[arg(long, env = "POMONA_PUSH_COALESCE")]
    pub push_coalesce: Option<String>,
    /// Re-push delays for a device that does not answer, the last repeating (default 1m,5m,30m,2h,24h).
    #[arg(long, env = "POMONA_PUSH_BACKOFF")]
    pub push_backoff: Option<String>,
    /// First retry delay after APNs failed (429, 5xx, no connection); doubles (default 5s).
    #[arg(long, env = "POMONA_PUSH_RETRY_BASE")]
    pub push_retry_base: Option<String>,
    /// Longest retry delay and circuit-breaker pause (default 10m).
    #[arg(long, env = "POMONA_PUSH_RETRY_MAX")]
    pub push_retry_max: Option<String>,
    /// How often the scheduler looks for due pushes (default 1s).
    #[arg(long, env = "POMONA_PUSH_POLL_INTERVAL")]
    pub push_poll_interval: Option<String>,
    /// Pushes in flight at once on the APNs connection (default 200).
    #[arg(long, env = "POMONA_PUSH_CONCURRENCY")]
    pub push_concurrency: Option<usize>,
    /// Time allowed for one push, connecting included (default 15s).
    #[arg(long, env = "POMONA_PUSH_TIMEOUT")]
    pub push_timeout: Option<String>,
    /// Read policies from Kubernetes custom resources instead of the policy directory.
    #[arg(long, env = "POMONA_KUBE")]
    pub kube: bool,
    /// With --kube: watch only this namespace (default: all namespaces).
    #[arg(long, env = "POMONA_NAMESPACE")]
    pub namespace: Option<String>,
    /// With --kube: kubeconfig file (default: the in-cluster service account).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// With --kube: namespace of the leader Lease (default: --namespace, else "default").
    #[arg(long, env = "POMONA_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// With --kube: this replica's name in the Lease and events (default: a random name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// With --kube: seconds a leader's Lease lasts without renewal (default 15).
    #[arg(long, env = "POMONA_LEASE_DURATION_SECS")]
    pub lease_duration_secs: Option<u64>,
    /// With --kube: seconds between status refreshes (default 10).
    #[arg(long, env = "POMONA_STATUS_INTERVAL_SECS")]
    pub status_interval_secs: Option<u64>,
    /// With --kube: seconds a deleted Profile waits for devices to remove it (default 600).
    #[arg(long, env = "POMONA_REMOVAL_TIMEOUT_SECS")]
    pub removal_timeout_secs: Option<u64>,
    /// Read policy from this git repository (https://, ssh:// or git@host:path, file://)
    /// instead of a policy directory.
    #[arg(long, env = "POMONA_GIT")]
    pub git: Option<String>,
    /// Branch to follow (default main).
    #[arg(long, alias = "branch", env = "POMONA_GIT_BRANCH")]
    pub git_branch: Option<String>,
    /// Policy directory inside the repository (default: the repository root).
    #[arg(long, alias = "path", env = "POMONA_GIT_PATH")]
    pub git_path: Option<String>,
    /// How often to fetch, jittered ±10 % (default 60s); webhooks fetch at once.
    #[arg(long, alias = "interval", env = "POMONA_GIT_INTERVAL")]
    pub git_interval: Option<String>,
    /// https: file holding a token, or user:password.
    #[arg(long, env = "POMONA_GIT_TOKEN_FILE")]
    pub git_token_file: Option<PathBuf>,
    /// ssh: private key file (default: an ssh agent).
    #[arg(long, env = "POMONA_GIT_SSH_KEY_FILE")]
    pub git_ssh_key_file: Option<PathBuf>,
    /// ssh: known_hosts file the server's host key must be in (required for ssh remotes).
    #[arg(long, env = "POMONA_GIT_KNOWN_HOSTS")]
    pub git_known_hosts: Option<PathBuf>,
    /// https: extra PEM CA certificate(s) to trust for the remote.
    #[arg(long, env = "POMONA_GIT_CA_FILE")]
    pub git_ca_file: Option<PathBuf>,
    /// File holding the secret of the POST /hooks/git webhook (GitHub HMAC or GitLab token).
    #[arg(long, env = "POMONA_GIT_WEBHOOK_SECRET_FILE")]
    pub git_webhook_secret_file: Option<PathBuf>,
    /// Apply only commits SSH-signed by a key in this file (git allowedSignersFile format).
    #[arg(long, env = "POMONA_GIT_ALLOWED_SIGNERS")]
    pub git_allowed_signers: Option<PathBuf>,
}

/// The same keys in a config file. Unknown keys are errors (a typo must not be ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    public_url: Option<String>,
    admin_token_file: Option<PathBuf>,
    policy_dir: Option<PathBuf>,
    max_body_bytes: Option<u64>,
    read_timeout_secs: Option<u64>,
    ca_cert: Option<PathBuf>,
    ca_key: Option<PathBuf>,
    device_cert_days: Option<u32>,
    scep_challenge_file: Option<PathBuf>,
    challenge_ttl_secs: Option<u64>,
    enrollment_token_ttl_secs: Option<u64>,
    enroll_access: Option<String>,
    sign_message: Option<bool>,
    sign_profiles: Option<bool>,
    trusted_proxies: Option<Vec<String>>,
    organization: Option<String>,
    retry_backoff_ms: Option<u64>,
    max_attempts: Option<u32>,
    inventory_interval_secs: Option<u64>,
    rollout_max_devices: Option<usize>,
    push_cert: Option<PathBuf>,
    push_key: Option<PathBuf>,
    push_p12: Option<PathBuf>,
    push_p12_password_file: Option<PathBuf>,
    push_endpoint: Option<String>,
    push_ca: Option<PathBuf>,
    push_coalesce: Option<String>,
    push_backoff: Option<String>,
    push_retry_base: Option<String>,
    push_retry_max: Option<String>,
    push_poll_interval: Option<String>,
    push_concurrency: Option<usize>,
    push_timeout: Option<String>,
    kube: Option<bool>,
    namespace: Option<String>,
    kubeconfig: Option<PathBuf>,
    lease_namespace: Option<String>,
    identity: Option<String>,
    lease_duration_secs: Option<u64>,
    status_interval_secs: Option<u64>,
    removal_timeout_secs: Option<u64>,
    git: Option<String>,
    git_branch: Option<String>,
    git_path: Option<String>,
    git_interval: Option<String>,
    git_token_file: Option<PathBuf>,
    git_ssh_key_file: Option<PathBuf>,
    git_known_hosts: Option<PathBuf>,
    git_ca_file: Option<PathBuf>,
    git_webhook_secret_file: Option<PathBuf>,
    git_allowed_signers: Option<PathBuf>,
}

/// Validated configuration for `pomona serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: String,
    pub tls: TlsSource,
    pub public_url: String,
    pub admin_token_file: Option<PathBuf>,
    pub policy_dir: PathBuf,
    pub policy_dir_explicit: bool,
    pub limits: Limits,
    pub device_ca: CaSource,
    pub device_cert_days: u32,
    pub enrollment: EnrollmentSettings,
    pub identity: crate::server::identity::IdentityPolicy,
    pub plan: crate::reconcile::plan::PlanSettings,
    pub push: crate::push::PushSettings,
    /// `--kube`: policies from custom resources, with leader election.
    pub kube: Option<crate::controller::KubeSettings>,
    /// Policy from git instead of `policy_dir`.
    pub git: Option<crate::policy::git::GitSettings>,
    /// Extra CA file for https remotes (installed into libgit2 once, at start).
    pub git_ca_file: Option<PathBuf>,
}

/// Where the device CA comes from.
#[derive(Debug, Clone)]
pub enum CaSource {
    /// Created once in `<data-dir>/ca/`.
    Generated,
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub enum TlsSource {
    /// Generate (once) a local CA and server certificate in the data directory.
    Generated,
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
}

/// Every problem found in the configuration, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

impl ServeArgs {
    fn kube_settings(
        &self,
        file: &FileConfig,
        problems: &mut Vec<String>,
    ) -> crate::controller::KubeSettings {
        let mut secs =
            |name: &str, flag: Option<u64>, key: Option<u64>, default: u64| match flag.or(key) {
                Some(0) => {
                    problems.push(format!("{name}: must be at least 1"));
                    Duration::from_secs(default)
                }
                Some(n) => Duration::from_secs(n),
                None => Duration::from_secs(default),
            };
        let lease_duration = secs(
            "lease_duration_secs",
            self.lease_duration_secs,
            file.lease_duration_secs,
            15,
        );
        let status_interval = secs(
            "status_interval_secs",
            self.status_interval_secs,
            file.status_interval_secs,
            10,
        );
        let removal_timeout = secs(
            "removal_timeout_secs",
            self.removal_timeout_secs,
            file.removal_timeout_secs,
            600,
        );
        let kubeconfig = self.kubeconfig.clone().or(file.kubeconfig.clone());
        if let Some(path) = &kubeconfig {
            if !path.is_file() {
                problems.push(format!("kubeconfig: {} is not a file", path.display()));
            }
        }
        let namespace = self.namespace.clone().or(file.namespace.clone());
        crate::controller::KubeSettings {
            kubeconfig,
            lease_namespace: self
                .lease_namespace
                .clone()
                .or(file.lease_namespace.clone())
                .or(namespace.clone())
                .unwrap_or_else(|| "default".into()),
            namespace,
            identity: self
                .identity
                .clone()
                .or(file.identity.clone())
                .unwrap_or_else(|| {
                    format!("pomona-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
                }),
            lease_duration,
            status_interval,
            removal_timeout,
            sweep_interval: Duration::from_secs(2),
        }
    }

    /// Merges flags over the config file over defaults and validates the result.
    pub fn resolve(&self) -> Result<ServeConfig, ConfigErrors> {
        let mut problems = Vec::new();
        let file = match &self.config {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => toml::from_str::<FileConfig>(&text).unwrap_or_else(|e| {
                    problems.push(format!("config file {}: {}", path.display(), e.message()));
                    FileConfig::default()
                }),
                Err(e) => {
                    problems.push(format!("config file {}: cannot read: {e}", path.display()));
                    FileConfig::default()
                }
            },
            None => FileConfig::default(),
        };
        let kube = (self.kube || file.kube == Some(true))
            .then(|| self.kube_settings(&file, &mut problems));
        let push = resolve_push(self, &file, &mut problems);
        let git = resolve_git(self, &file, &mut problems);
        let git_ca_file = self.git_ca_file.clone().or(file.git_ca_file.clone());
        if let Some(path) = &git_ca_file {
            if !path.is_file() {
                problems.push(format!(
                    "git_ca_file: {} does not exist or is not a file",
                    path.display()
                ));
            }
        }

        let listen_text = self
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "0.0.0.0:8443".into());
        let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
            problems.push(format!(
                "listen: {listen_text:?} is not an address like 0.0.0.0:8443"
            ));
            SocketAddr::from(([0, 0, 0, 0], 8443))
        });

        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| "pomona-data".into());
        if data_dir.exists() && !data_dir.is_dir() {
            problems.push(format!(
                "data_dir: {} exists and is not a directory",
                data_dir.display()
            ));
        }

        let database = self
            .database
            .clone()
            .or(file.database)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("pomona.db").display()));
        if !(database.starts_with("sqlite:")
            || database.starts_with("postgres:")
            || database.starts_with("postgresql:"))
        {
            problems.push("database: must start with sqlite:// or postgres:// (the value is not shown: it may hold a password)".into());
        }

        let tls = match (
            self.tls_cert.clone().or(file.tls_cert),
            self.tls_key.clone().or(file.tls_key),
        ) {
            (None, None) => TlsSource::Generated,
            (Some(cert), Some(key)) => {
                for (name, path) in [("tls_cert", &cert), ("tls_key", &key)] {
                    if !path.is_file() {
                        problems.push(format!(
                            "{name}: {} does not exist or is not a file",
                            path.display()
                        ));
                    }
                }
                TlsSource::Files { cert, key }
            }
            (Some(_), None) => {
                problems.push("tls_cert is set but tls_key is not: give both or neither".into());
                TlsSource::Generated
            }
            (None, Some(_)) => {
                problems.push("tls_key is set but tls_cert is not: give both or neither".into());
                TlsSource::Generated
            }
        };

        let public_url = self
            .public_url
            .clone()
            .or(file.public_url)
            .unwrap_or_else(|| format!("https://localhost:{}", listen.port()));
        if let Err(reason) = check_public_url(&public_url) {
            problems.push(format!("public_url: {reason}"));
        }

        let admin_token_file = self.admin_token_file.clone().or(file.admin_token_file);
        if let Some(path) = &admin_token_file {
            match std::fs::read_to_string(path) {
                Ok(text) if text.trim().len() < 16 => problems.push(format!(
                    "admin_token_file: {} holds a token shorter than 16 characters",
                    path.display()
                )),
                Ok(_) => {}
                Err(e) => problems.push(format!(
                    "admin_token_file: cannot read {}: {e}",
                    path.display()
                )),
            }
        }

        let policy_dir_explicit = self.policy_dir.is_some() || file.policy_dir.is_some();
        let policy_dir = self
            .policy_dir
            .clone()
            .or(file.policy_dir)
            .unwrap_or_else(|| "policies".into());
        if policy_dir_explicit && git.is_some() {
            problems.push(
                "policy_dir and git are both set: policy comes from one source, choose one".into(),
            );
        } else if policy_dir_explicit && !policy_dir.is_dir() {
            problems.push(format!(
                "policy_dir: {} is not a directory",
                policy_dir.display()
            ));
        }

        if kube.is_some() && git.is_some() {
            problems
                .push("git and kube are both set: policy comes from one source, choose one".into());
        }
        if kube.is_some() && policy_dir_explicit {
            problems.push(
                "policy_dir and kube exclude each other: policies come from a directory or from \
                 custom resources"
                    .into(),
            );
        }

        let mut limits = Limits::default();
        match self.max_body_bytes.or(file.max_body_bytes) {
            Some(0) => problems.push("max_body_bytes: must be greater than 0".into()),
            Some(n) => limits.max_body_bytes = n as usize,
            None => {}
        }
        match self.read_timeout_secs.or(file.read_timeout_secs) {
            Some(0) => problems.push("read_timeout_secs: must be greater than 0".into()),
            Some(n) => limits.read_timeout = Duration::from_secs(n),
            None => {}
        }

        let device_ca = match (
            self.ca_cert.clone().or(file.ca_cert),
            self.ca_key.clone().or(file.ca_key),
        ) {
            (None, None) => CaSource::Generated,
            (Some(cert), Some(key)) => {
                for (name, path) in [("ca_cert", &cert), ("ca_key", &key)] {
                    if !path.is_file() {
                        problems.push(format!(
                            "{name}: {} does not exist or is not a file",
                            path.display()
                        ));
                    }
                }
                CaSource::Files { cert, key }
            }
            _ => {
                problems.push("ca_cert and ca_key: give both or neither".into());
                CaSource::Generated
            }
        };
        let device_cert_days = match self.device_cert_days.or(file.device_cert_days) {
            Some(0) => {
                problems.push("device_cert_days: must be at least 1".into());
                365
            }
            Some(days) => days,
            None => 365,
        };

        let mut enrollment = EnrollmentSettings::default();
        if let Some(path) = self
            .scep_challenge_file
            .clone()
            .or(file.scep_challenge_file)
        {
            match std::fs::read_to_string(&path) {
                Ok(text) if text.trim().len() < 8 => problems.push(format!(
                    "scep_challenge_file: {} holds a challenge shorter than 8 characters",
                    path.display()
                )),
                Ok(text) => enrollment.static_challenge = Some(text.trim().to_string()),
                Err(e) => problems.push(format!(
                    "scep_challenge_file: cannot read {}: {e}",
                    path.display()
                )),
            }
        }
        match self.challenge_ttl_secs.or(file.challenge_ttl_secs) {
            Some(0) => problems.push("challenge_ttl_secs: must be greater than 0".into()),
            Some(n) => enrollment.challenge_ttl = Duration::from_secs(n),
            None => {}
        }
        match self
            .enrollment_token_ttl_secs
            .or(file.enrollment_token_ttl_secs)
        {
            Some(0) => problems.push("enrollment_token_ttl_secs: must be greater than 0".into()),
            Some(n) => enrollment.token_ttl = Duration::from_secs(n),
            None => {}
        }
        match self.enroll_access.clone().or(file.enroll_access).as_deref() {
            None | Some("token") => {}
            Some("admin") => enrollment.access = EnrollAccess::Admin,
            Some(other) => problems.push(format!(
                "enroll_access: {other:?} is not \"token\" or \"admin\""
            )),
        }
        enrollment.sign_message = self.sign_message.or(file.sign_message).unwrap_or(false);
        enrollment.sign_profiles = self.sign_profiles.or(file.sign_profiles).unwrap_or(false);
        if let Some(org) = self.organization.clone().or(file.organization) {
            enrollment.organization = org;
        }
        let proxy_texts = if self.trusted_proxies.is_empty() {
            file.trusted_proxies.unwrap_or_default()
        } else {
            self.trusted_proxies.clone()
        };
        let mut identity = crate::server::identity::IdentityPolicy::default();
        for text in proxy_texts.iter().filter(|t| !t.trim().is_empty()) {
            match text.parse() {
                Ok(range) => identity.trusted_proxies.push(range),
                Err(reason) => problems.push(format!("trusted_proxies: {reason}")),
            }
        }

        let mut plan = crate::reconcile::plan::PlanSettings::default();
        if let Some(ms) = self.retry_backoff_ms.or(file.retry_backoff_ms) {
            plan.backoff_ms = ms as i64;
        }
        match self
            .inventory_interval_secs
            .or(file.inventory_interval_secs)
        {
            Some(0) => problems.push("inventory_interval_secs: must be at least 1".into()),
            Some(n) => plan.inventory_interval_ms = n as i64 * 1000,
            None => {}
        }
        if let Some(n) = self.rollout_max_devices.or(file.rollout_max_devices) {
            plan.rollout_max_devices = n;
        }
        match self.max_attempts.or(file.max_attempts) {
            Some(0) => problems.push("max_attempts: must be at least 1".into()),
            Some(n) => plan.max_attempts = n,
            None => {}
        }

        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        Ok(ServeConfig {
            kube,
            plan,
            listen,
            data_dir,
            database,
            tls,
            public_url,
            admin_token_file,
            policy_dir,
            policy_dir_explicit,
            limits,
            device_ca,
            device_cert_days,
            enrollment,
            identity,
            push,
            git,
            git_ca_file,
        })
    }
}

/// Reads a secret file: trimmed, non-empty. Problems name the key and the path, never the value.
fn read_secret(name: &str, path: &Path, problems: &mut Vec<String>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => {
            problems.push(format!("{name}: {} is empty", path.display()));
            None
        }
        Ok(text) => Some(text.trim().to_string()),
        Err(e) => {
            problems.push(format!("{name}: cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// Git source settings from flags over the file (`None` without `git`).
fn resolve_git(
    args: &ServeArgs,
    file: &FileConfig,
    problems: &mut Vec<String>,
) -> Option<crate::policy::git::GitSettings> {
    use crate::policy::git;
    let pick = |flag: &Option<PathBuf>, key: &Option<PathBuf>| flag.clone().or(key.clone());
    let token_file = pick(&args.git_token_file, &file.git_token_file);
    let ssh_key = pick(&args.git_ssh_key_file, &file.git_ssh_key_file);
    let known_hosts = pick(&args.git_known_hosts, &file.git_known_hosts);
    let secret_file = pick(&args.git_webhook_secret_file, &file.git_webhook_secret_file);
    let signers_file = pick(&args.git_allowed_signers, &file.git_allowed_signers);
    let Some(url) = args.git.clone().or(file.git.clone()) else {
        let stray = [
            (
                "git_branch",
                args.git_branch.is_some() || file.git_branch.is_some(),
            ),
            (
                "git_path",
                args.git_path.is_some() || file.git_path.is_some(),
            ),
            (
                "git_interval",
                args.git_interval.is_some() || file.git_interval.is_some(),
            ),
            ("git_token_file", token_file.is_some()),
            ("git_ssh_key_file", ssh_key.is_some()),
            ("git_known_hosts", known_hosts.is_some()),
            ("git_webhook_secret_file", secret_file.is_some()),
            ("git_allowed_signers", signers_file.is_some()),
        ];
        for (name, set) in stray {
            if set {
                problems.push(format!("{name} is set but git (the repository URL) is not"));
            }
        }
        return None;
    };
    let transport = git::transport(&url);
    if transport.is_none() {
        problems.push(format!(
            "git: {:?} is not an https://, ssh://, git@host:path or file:// URL",
            git::redact_url(&url)
        ));
    }
    let branch = args
        .git_branch
        .clone()
        .or(file.git_branch.clone())
        .unwrap_or_else(|| "main".into());
    if branch.trim().is_empty() || branch.starts_with("refs/") || branch.contains("..") {
        problems.push(format!(
            "git_branch: {branch:?} must be a branch name like main (not a ref path)"
        ));
    }
    let path = match git::normalise_path(
        &args
            .git_path
            .clone()
            .or(file.git_path.clone())
            .unwrap_or_default(),
    ) {
        Ok(p) => p,
        Err(reason) => {
            problems.push(format!("git_path: {reason}"));
            String::new()
        }
    };
    let mut interval = Duration::from_secs(60);
    if let Some(text) = args.git_interval.clone().or(file.git_interval.clone()) {
        match crate::cmdline::parse_duration(&text) {
            Ok(d) if d.is_zero() => problems.push("git_interval: must be greater than 0".into()),
            Ok(d) => interval = d,
            Err(reason) => problems.push(format!("git_interval: {reason}")),
        }
    }
    let mut auth = git::GitAuth::default();
    if let Some(path) = &token_file {
        if transport.is_some_and(|t| t != "https") {
            problems.push("git_token_file is only used with https:// remotes".into());
        }
        auth.token = read_secret("git_token_file", path, problems);
    }
    for (name, path) in [
        ("git_ssh_key_file", &ssh_key),
        ("git_known_hosts", &known_hosts),
    ] {
        if let Some(path) = path {
            if transport.is_some_and(|t| t != "ssh") {
                problems.push(format!("{name} is only used with ssh remotes"));
            }
            if !path.is_file() {
                problems.push(format!(
                    "{name}: {} does not exist or is not a file",
                    path.display()
                ));
            }
        }
    }
    if transport == Some("ssh") && known_hosts.is_none() {
        problems.push(
            "git: ssh remotes need git_known_hosts (the server's host key is checked, never \
             accepted blindly)"
                .into(),
        );
    }
    auth.ssh_key = ssh_key;
    auth.known_hosts = known_hosts;
    let webhook_secret = secret_file
        .as_ref()
        .and_then(|path| read_secret("git_webhook_secret_file", path, problems));
    let allowed_signers = signers_file.as_ref().and_then(|path| {
        let text = read_secret("git_allowed_signers", path, problems)?;
        match crate::policy::git_signature::parse_allowed_signers(&text) {
            Ok(signers) => Some(signers),
            Err(list) => {
                for p in list {
                    problems.push(format!("git_allowed_signers: {}: {p}", path.display()));
                }
                None
            }
        }
    });
    Some(git::GitSettings {
        url,
        branch,
        path,
        interval,
        auth,
        webhook_secret,
        allowed_signers,
    })
}

/// Push settings from flags over the file; problems are appended, never fatal on their own.
fn resolve_push(
    args: &ServeArgs,
    file: &FileConfig,
    problems: &mut Vec<String>,
) -> crate::push::PushSettings {
    use crate::push::CertificateSource;
    let mut push = crate::push::PushSettings::default();
    let pick = |flag: &Option<PathBuf>, key: &Option<PathBuf>| flag.clone().or(key.clone());
    let cert = pick(&args.push_cert, &file.push_cert);
    let key = pick(&args.push_key, &file.push_key);
    let p12 = pick(&args.push_p12, &file.push_p12);
    let password_file = pick(&args.push_p12_password_file, &file.push_p12_password_file);
    let mut must_exist = |name: &str, path: &Option<PathBuf>| {
        if let Some(path) = path {
            if !path.is_file() {
                problems.push(format!(
                    "{name}: {} does not exist or is not a file",
                    path.display()
                ));
            }
        }
    };
    must_exist("push_cert", &cert);
    must_exist("push_key", &key);
    must_exist("push_p12", &p12);
    must_exist("push_p12_password_file", &password_file);
    must_exist("push_ca", &pick(&args.push_ca, &file.push_ca));
    push.certificate = match (cert, key, p12, password_file) {
        (None, None, None, None) => None,
        (Some(cert), key, None, None) => Some(CertificateSource::Pem { cert, key }),
        (None, None, Some(path), Some(password_file)) => Some(CertificateSource::Pkcs12 {
            path,
            password_file,
        }),
        (None, Some(_), None, None) => {
            problems.push("push_key is set but push_cert is not: give the certificate too".into());
            None
        }
        (None, None, Some(_), None) => {
            problems.push(
                "push_p12 needs push_p12_password_file (the PKCS#12 password, in a file)".into(),
            );
            None
        }
        (None, None, None, Some(_)) => {
            problems.push("push_p12_password_file is set but push_p12 is not".into());
            None
        }
        _ => {
            problems.push("give the push certificate either as push_cert (+ push_key) or as push_p12 (+ push_p12_password_file), not both".into());
            None
        }
    };
    if let Some(endpoint) = args.push_endpoint.clone().or(file.push_endpoint.clone()) {
        match crate::push::client::endpoint_url(&endpoint) {
            Ok(_) => push.endpoint = endpoint,
            Err(reason) => problems.push(format!("push_endpoint: {reason}")),
        }
    }
    push.extra_ca = pick(&args.push_ca, &file.push_ca);
    let mut duration = |name: &str,
                        flag: &Option<String>,
                        key: &Option<String>,
                        target: &mut Duration| {
        if let Some(text) = flag.clone().or(key.clone()) {
            match crate::cmdline::parse_duration(&text) {
                Ok(d) if d.is_zero() => problems.push(format!("{name}: must be greater than 0")),
                Ok(d) => *target = d,
                Err(reason) => problems.push(format!("{name}: {reason}")),
            }
        }
    };
    let schedule = &mut push.schedule;
    duration(
        "push_coalesce",
        &args.push_coalesce,
        &file.push_coalesce,
        &mut schedule.coalesce,
    );
    duration(
        "push_retry_base",
        &args.push_retry_base,
        &file.push_retry_base,
        &mut schedule.retry_base,
    );
    duration(
        "push_retry_max",
        &args.push_retry_max,
        &file.push_retry_max,
        &mut schedule.retry_max,
    );
    duration(
        "push_poll_interval",
        &args.push_poll_interval,
        &file.push_poll_interval,
        &mut schedule.poll_interval,
    );
    duration(
        "push_timeout",
        &args.push_timeout,
        &file.push_timeout,
        &mut push.timeout,
    );
    if let Some(text) = args.push_backoff.clone().or(file.push_backoff.clone()) {
        let parsed: Result<Vec<Duration>, String> = text
            .split(',')
            .map(|part| {
                crate::cmdline::parse_duration(part).and_then(|d| {
                    if d.is_zero() {
                        Err(format!("{part:?} must be greater than 0"))
                    } else {
                        Ok(d)
                    }
                })
            })
            .collect();
        match parsed {
            Ok(list) if !list.is_empty() => push.schedule.backoff = list,
            Ok(_) => {
                problems.push("push_backoff: give at least one delay, e.g. 1m,5m,30m,2h,24h".into())
            }
            Err(reason) => problems.push(format!("push_backoff: {reason} (e.g. 1m,5m,30m,2h,24h)")),
        }
    }
    match args.push_concurrency.or(file.push_concurrency) {
        Some(0) => problems.push("push_concurrency: must be greater than 0".into()),
        Some(n) => push.concurrency = n,
        None => {}
    }
    push
}

fn check_public_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?} must start with https:// (devices only talk HTTPS)"))?;
    if url_host(rest).is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

/// The host part of a URL without its scheme (`host[:port][/path]`, IPv6 in brackets).
pub fn url_host(without_scheme: &str) -> &str {
    let authority = without_scheme.split('/').next().unwrap_or("");
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    authority.split(':').next().unwrap_or("")
}

impl ServeConfig {
    pub fn public_host(&self) -> &str {
        url_host(self.public_url.trim_start_matches("https://"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_setup() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c.listen.port(), 8443);
        assert_eq!(c.database, "sqlite://pomona-data/pomona.db");
        assert_eq!(c.public_url, "https://localhost:8443");
        assert!(matches!(c.tls, TlsSource::Generated));
        assert_eq!(c.limits.max_body_bytes, 10 * 1024 * 1024);
    }

    #[test]
    fn kube_settings_default_sensibly_and_exclude_a_policy_directory() {
        let c = ServeArgs {
            kube: true,
            namespace: Some("mdm".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        let k = c.kube.expect("--kube gives kube settings");
        assert_eq!(k.namespace.as_deref(), Some("mdm"));
        assert_eq!(k.lease_namespace, "mdm", "the Lease follows --namespace");
        assert_eq!(k.lease_duration, Duration::from_secs(15));
        assert_eq!(k.removal_timeout, Duration::from_secs(600));
        assert!(k.identity.starts_with("pomona-"));
        assert!(ServeArgs::default().resolve().unwrap().kube.is_none());

        let dir = tempfile::tempdir().unwrap();
        let err = ServeArgs {
            kube: true,
            policy_dir: Some(dir.path().to_path_buf()),
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            removal_timeout_secs: Some(0),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        for expected in [
            "policy_dir and kube exclude",
            "kubeconfig:",
            "removal_timeout_secs:",
        ] {
            assert!(err.contains(expected), "{expected} missing from:\n{err}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let args = ServeArgs {
            listen: Some("nowhere".into()),
            database: Some("mysql://x".into()),
            tls_cert: Some("/nonexistent.pem".into()),
            public_url: Some("http://mdm.example.com".into()),
            max_body_bytes: Some(0),
            ..ServeArgs::default()
        };
        let err = args.resolve().unwrap_err();
        let text = err.to_string();
        for expected in [
            "listen:",
            "database:",
            "tls_cert is set but tls_key",
            "public_url:",
            "max_body_bytes:",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        assert_eq!(err.0.len(), 5, "{text}");
    }

    #[test]
    fn identity_settings_are_validated_together() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("challenge");
        std::fs::write(&short, "abc\n").unwrap();
        let args = ServeArgs {
            ca_cert: Some("/nonexistent/ca.pem".into()),
            device_cert_days: Some(0),
            scep_challenge_file: Some(short),
            challenge_ttl_secs: Some(0),
            enroll_access: Some("everyone".into()),
            trusted_proxies: vec!["10.0.0.0/40".into()],
            ..ServeArgs::default()
        };
        let err = args.resolve().unwrap_err();
        let text = err.to_string();
        for expected in [
            "ca_cert and ca_key: give both or neither",
            "device_cert_days:",
            "shorter than 8 characters",
            "challenge_ttl_secs:",
            "enroll_access: \"everyone\"",
            "trusted_proxies:",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        assert!(
            !text.contains("abc"),
            "a challenge leaked into the error: {text}"
        );
        assert_eq!(err.0.len(), 6, "{text}");

        let fine = ServeArgs {
            trusted_proxies: vec!["10.0.0.0/8".into()],
            enroll_access: Some("admin".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(fine.enrollment.access, EnrollAccess::Admin);
        assert!(fine.identity.trusts_proxy("10.1.2.3".parse().unwrap()));
        assert_eq!(fine.device_cert_days, 365);
    }

    #[test]
    fn config_file_keys_apply_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pomona.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\npublic_url = \"https://mdm.example.com\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:9443".into()),
            ..ServeArgs::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.listen.port(), 9443, "flag must win over the file");
        assert_eq!(c.public_url, "https://mdm.example.com");
        assert_eq!(c.public_host(), "mdm.example.com");

        std::fs::write(&path, "lissten = \"x\"\n").unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `lissten`"), "{err}");
    }

    #[test]
    fn push_settings_are_validated_together() {
        let args = ServeArgs {
            push_p12: Some("/nonexistent.p12".into()),
            push_endpoint: Some("staging".into()),
            push_backoff: Some("1m,soon".into()),
            push_coalesce: Some("0s".into()),
            ..ServeArgs::default()
        };
        let text = args.resolve().unwrap_err().to_string();
        for expected in [
            "push_p12: /nonexistent.p12 does not exist",
            "push_p12 needs push_p12_password_file",
            "push_endpoint:",
            "push_backoff:",
            "push_coalesce: must be greater than 0",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }

    #[test]
    fn push_intervals_come_from_flags() {
        let c = ServeArgs {
            push_backoff: Some("100ms,200ms".into()),
            push_coalesce: Some("50ms".into()),
            push_endpoint: Some("sandbox".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        assert!(
            c.push.certificate.is_none(),
            "push stays off without a certificate"
        );
        assert_eq!(c.push.endpoint, "sandbox");
        assert_eq!(c.push.schedule.coalesce, Duration::from_millis(50));
        assert_eq!(
            c.push.schedule.backoff,
            vec![Duration::from_millis(100), Duration::from_millis(200)]
        );
    }

    #[test]
    fn git_settings_are_validated_together_and_secrets_stay_out_of_errors() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "ghp_secret_value\n").unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        let err = ServeArgs {
            git: Some("git@github.com:example/policy.git".into()),
            git_token_file: Some(token.clone()),
            git_path: Some("../outside".into()),
            git_interval: Some("0s".into()),
            policy_dir: Some(policies),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err();
        let text = err.to_string();
        for expected in [
            "git_token_file is only used with https:// remotes",
            "git_path:",
            "git_interval: must be greater than 0",
            "ssh remotes need git_known_hosts",
            "policy_dir and git are both set",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        assert!(!text.contains("ghp_secret"), "{text}");
        assert_eq!(err.0.len(), 5, "{text}");

        let err = ServeArgs {
            git: Some("http://example.com/policy.git".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("is not an https://"), "{err}");

        let err = ServeArgs {
            git_branch: Some("main".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(
            err.to_string().contains("git_branch is set but git"),
            "{err}"
        );

        let c = ServeArgs {
            git: Some("https://github.com/example/policy.git".into()),
            git_token_file: Some(token),
            git_path: Some("policies/".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        let git = c.git.expect("git settings");
        assert_eq!(git.branch, "main");
        assert_eq!(git.path, "policies");
        assert_eq!(git.interval, Duration::from_secs(60));
        assert_eq!(git.auth.token.as_deref(), Some("ghp_secret_value"));
        assert!(!format!("{git:?}").contains("ghp_secret"));
        assert_eq!(
            git.describe(),
            "git https://github.com/example/policy.git main policies"
        );
    }

    #[test]
    fn url_hosts_are_extracted() {
        assert_eq!(url_host("mdm.example.com:8443/mdm"), "mdm.example.com");
        assert_eq!(url_host("[::1]:8443"), "::1");
        assert_eq!(url_host(""), "");
    }
}
