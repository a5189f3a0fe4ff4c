//! Server configuration: flags, environment variables and a TOML config file merged into one
//! typed `ServeConfig`, validated once (every problem reported together), plus the first-start
//! set-up of the data directory (TLS certificate, admin token).
//!
//! Precedence: command-line flag or its environment variable, then the config file, then the
//! default. The library never reads the environment itself; `clap` does it at the edge.

pub mod bootstrap;
mod resolve;

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
    /// PostgreSQL: connections for requests' own statements (default 16); the batch queues
    /// open 6 more.
    #[arg(long, env = "POMONA_DATABASE_CONNECTIONS")]
    pub database_connections: Option<u32>,
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
    /// Start without pushes (with a warning) when the --push-cert or --push-p12 file does not
    /// exist, e.g. while an optional Kubernetes Secret holding it is not created yet. A file that
    /// exists but cannot be used is still an error.
    #[arg(long, env = "POMONA_PUSH_OPTIONAL")]
    pub push_optional: bool,
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
    /// How long finished commands and their results are kept (default 7d); queued ones,
    /// results not yet read and device actions' commands are kept whatever their age.
    #[arg(long, env = "POMONA_COMMAND_RETENTION")]
    pub command_retention: Option<String>,
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
    database_connections: Option<u32>,
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
    push_optional: Option<bool>,
    push_endpoint: Option<String>,
    push_ca: Option<PathBuf>,
    push_coalesce: Option<String>,
    push_backoff: Option<String>,
    push_retry_base: Option<String>,
    push_retry_max: Option<String>,
    push_poll_interval: Option<String>,
    command_retention: Option<String>,
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
    /// PostgreSQL connections for requests (`store::PostgresStore::open_sized`).
    pub database_connections: u32,
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
    /// How long finished commands are kept (`retention`).
    pub command_retention: Duration,
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
    fn database_connections_default_to_16_and_must_be_from_2_to_1000() {
        assert_eq!(
            ServeArgs::default().resolve().unwrap().database_connections,
            16
        );
        let with = |n| ServeArgs {
            database_connections: Some(n),
            ..ServeArgs::default()
        };
        assert_eq!(with(40).resolve().unwrap().database_connections, 40);
        for n in [0, 1, 1001] {
            let err = with(n).resolve().unwrap_err().to_string();
            assert!(
                err.contains("database_connections: ") && err.contains("out of range"),
                "{n}: {err}"
            );
        }
    }

    #[test]
    fn command_retention_defaults_to_a_week_and_refuses_less_than_an_hour() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c.command_retention, Duration::from_secs(7 * 86_400));
        let c = ServeArgs {
            command_retention: Some("48h".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.command_retention, Duration::from_secs(48 * 3600));
        for (given, expected) in [
            ("7", "less than an hour"),
            ("30m", "less than an hour"),
            ("a week", "is not a duration"),
        ] {
            let err = ServeArgs {
                command_retention: Some(given.into()),
                ..ServeArgs::default()
            }
            .resolve()
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("command_retention") && err.contains(expected),
                "{given}: {err}"
            );
        }
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
    fn an_optional_push_certificate_that_is_absent_means_no_pushes() {
        let absent = ServeArgs {
            push_cert: Some("/nonexistent/push/tls.crt".into()),
            push_key: Some("/nonexistent/push/tls.key".into()),
            ..ServeArgs::default()
        };
        let text = absent.clone().resolve().unwrap_err().to_string();
        assert!(
            text.contains("push_cert: /nonexistent/push/tls.crt does not exist"),
            "without push_optional a missing certificate is an error:\n{text}"
        );
        let c = ServeArgs {
            push_optional: true,
            ..absent
        }
        .resolve()
        .expect("push_optional: a missing certificate is not an error");
        assert!(c.push.certificate.is_none(), "no certificate, no pushes");

        let p12 = ServeArgs {
            push_p12: Some("/nonexistent/push.p12".into()),
            push_p12_password_file: Some("/nonexistent/push.pw".into()),
            push_optional: true,
            ..ServeArgs::default()
        };
        assert!(p12.resolve().unwrap().push.certificate.is_none());

        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        std::fs::write(&cert, "not checked here").unwrap();
        let c = ServeArgs {
            push_cert: Some(cert),
            push_optional: true,
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        assert!(
            c.push.certificate.is_some(),
            "a certificate that is there is used (and refused at start if unusable)"
        );
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
