//! Administrator commands that talk to a running server through the admin API (so they work
//! the same against one SQLite server or several PostgreSQL replicas): `enroll-profile`.

use anyhow::Context as _;
use std::path::PathBuf;

/// Where the admin API is and how to authenticate to it (shared by admin commands).
#[derive(Debug, Clone, clap::Args)]
pub struct AdminConnection {
    /// Server base URL.
    #[arg(long, default_value = "https://localhost:8443")]
    pub server: String,
    /// File holding the admin token.
    #[arg(long, default_value = "pomona-data/admin-token")]
    pub admin_token_file: PathBuf,
    /// PEM CA certificate to trust for the server (default: pomona-data/tls/ca.pem when present).
    #[arg(long)]
    pub server_ca: Option<PathBuf>,
}

impl AdminConnection {
    fn client(&self) -> anyhow::Result<(reqwest::Client, String)> {
        let default_ca = PathBuf::from("pomona-data/tls/ca.pem");
        let ca = self
            .server_ca
            .clone()
            .or_else(|| default_ca.exists().then_some(default_ca));
        let token = std::fs::read_to_string(&self.admin_token_file)
            .with_context(|| {
                format!(
                    "reading the admin token from {}",
                    self.admin_token_file.display()
                )
            })?
            .trim()
            .to_string();
        Ok((crate::sim::client(ca.as_deref())?, token))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.trim_end_matches('/'))
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct EnrollProfileArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    /// Where to write the profile (mode 0600: it holds a one-time challenge).
    #[arg(long, short, default_value = "pomona-enroll.mobileconfig")]
    pub output: PathBuf,
    /// Print a one-time enrollment link instead of writing a profile.
    #[arg(long)]
    pub link: bool,
}

pub async fn enroll_profile(args: EnrollProfileArgs) -> anyhow::Result<()> {
    let (client, token) = args.connection.client()?;
    if args.link {
        let response = client
            .post(args.connection.url("/api/v1/enrollment-tokens"))
            .bearer_auth(&token)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", args.connection.server))?;
        let status = response.status();
        let json: serde_json::Value = response.json().await.unwrap_or_default();
        let url = json["enroll_url"].as_str().with_context(|| {
            format!(
                "creating an enrollment token: HTTP {status}: {}",
                json["error"]
            )
        })?;
        println!("{url}");
        eprintln!(
            "one-time link, valid until {}; opening it on the device downloads the profile",
            json["expires_at"].as_str().unwrap_or("?")
        );
        return Ok(());
    }
    let response = client
        .get(args.connection.url("/enroll"))
        .bearer_auth(&token)
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.connection.server))?;
    let status = response.status();
    let bytes = response.bytes().await?;
    if !status.is_success() {
        anyhow::bail!(
            "downloading the enrollment profile: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes).trim()
        );
    }
    crate::config::write_private_file(&args.output, &bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let plain = crate::pki::unwrap_signed_profile(&bytes).map_err(|e| anyhow::anyhow!(e))?;
    let instructions = crate::protocol::enrollment_profile::read(&plain)
        .map_err(|e| anyhow::anyhow!("the server sent an unreadable profile: {e}"))?;
    eprintln!(
        "wrote {} (ServerURL {}, topic {}); its SCEP challenge works once",
        args.output.display(),
        instructions.server_url,
        instructions.topic
    );
    if instructions.topic == crate::protocol::enrollment_profile::PLACEHOLDER_TOPIC {
        eprintln!("warning: no push certificate is configured: devices enrolled with this profile cannot be woken by push");
    }
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct ValidateArgs {
    /// The policy directory to check (default ./policies).
    #[arg(default_value = "policies")]
    pub dir: PathBuf,
}

/// `pomona validate DIR`: 0 when valid (warnings allowed), 2 when any error. Problems are
/// printed as `file:line: severity: Kind/name: message`.
pub fn validate(args: &ValidateArgs) -> u8 {
    if !args.dir.is_dir() {
        eprintln!("{}: not a directory", args.dir.display());
        return 2;
    }
    match crate::policy::source::load_dir(&args.dir) {
        Ok(snapshot) => {
            for warning in &snapshot.warnings {
                println!("{warning}");
            }
            println!(
                "{}: valid ({} groups, {} profiles, {} warnings; revision {})",
                args.dir.display(),
                snapshot.groups.len(),
                snapshot.profiles.len(),
                snapshot.warnings.len(),
                snapshot.revision
            );
            0
        }
        Err(problems) => {
            for problem in &problems {
                println!("{problem}");
            }
            let errors = problems
                .iter()
                .filter(|p| p.severity == crate::policy::load::Severity::Error)
                .count();
            println!("{}: invalid ({errors} errors)", args.dir.display());
            2
        }
    }
}
