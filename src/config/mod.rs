//! Server configuration: flags, environment variables and a TOML config file merged into one
//! typed `ServeConfig`, validated once (every problem reported together), plus the first-start
//! set-up of the data directory (TLS certificate, admin token).
//!
//! Precedence: command-line flag or its environment variable, then the config file, then the
//! default. The library never reads the environment itself; `clap` does it at the edge.

pub mod bootstrap;

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

/// Request limits applied to every endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 * 1024 * 1024,
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// Every problem found in the configuration, one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

impl ServeArgs {
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
        if policy_dir_explicit && !policy_dir.is_dir() {
            problems.push(format!(
                "policy_dir: {} is not a directory",
                policy_dir.display()
            ));
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

        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        Ok(ServeConfig {
            listen,
            data_dir,
            database,
            tls,
            public_url,
            admin_token_file,
            policy_dir,
            policy_dir_explicit,
            limits,
        })
    }
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

/// Creates a file readable only by its owner and writes `contents` (used for keys and tokens).
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
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
    fn url_hosts_are_extracted() {
        assert_eq!(url_host("mdm.example.com:8443/mdm"), "mdm.example.com");
        assert_eq!(url_host("[::1]:8443"), "::1");
        assert_eq!(url_host(""), "");
    }
}
