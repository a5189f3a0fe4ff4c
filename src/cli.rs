//! The administrator and policy-author commands: `enroll-profile`, `validate`, `plan`,
//! `status`, `label`, and the device actions (`actions.rs`). Those that talk to a running server
//! go through the admin API (so they work the same against one SQLite server or several
//! PostgreSQL replicas) and read its answers as `api` types; an answer that does not read as
//! its type is an error naming the type, never a "?" in the output.

pub mod actions;

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
        Ok((crate::cmdline::client(ca.as_deref())?, token))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.trim_end_matches('/'))
    }

    /// One admin API call with an optional JSON body: the typed answer, or an error naming
    /// the HTTP status and the server's `error` text (and the problems of a refused policy).
    async fn call<Answer: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> anyhow::Result<Answer> {
        let (client, token) = self.client()?;
        let mut request = client.request(method, self.url(path)).bearer_auth(&token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.server))?;
        answer_of(response).await
    }
}

/// An admin API answer read as `Answer`, or the error it carries.
async fn answer_of<Answer: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> anyhow::Result<Answer> {
    let status = response.status();
    let bytes = response.bytes().await.context("reading the answer")?;
    if !status.is_success() {
        let refusal = match serde_json::from_slice::<crate::api::ErrorBody>(&bytes) {
            Ok(e) => match e.problems {
                Some(problems) => format!("{}:\n  {}", e.error, problems.join("\n  ")),
                None => e.error,
            },
            Err(_) => String::from_utf8_lossy(&bytes).trim().to_string(),
        };
        anyhow::bail!("HTTP {status}: {refusal}");
    }
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "the server's answer is not the {} this pomona expects (a different version?)",
            std::any::type_name::<Answer>()
                .rsplit("::")
                .next()
                .unwrap_or("answer")
        )
    })
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
        let link: crate::api::EnrollmentToken = answer_of(response)
            .await
            .context("creating an enrollment token")?;
        println!("{}", link.enroll_url);
        eprintln!(
            "one-time link, valid until {}; opening it on the device downloads the profile",
            link.expires_at.as_deref().unwrap_or("?")
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
    crate::vocab::fs::write_private_file(&args.output, &bytes)
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

/// Loads a policy directory named on the command line; problems name its files by the path as
/// given (`examples/policies/wifi.yaml`, not `policies/wifi.yaml`).
fn load_as_given(
    dir: &std::path::Path,
) -> Result<crate::policy::snapshot::PolicySnapshot, Vec<crate::policy::load::Problem>> {
    crate::policy::source::load_tree(dir, &dir.display().to_string(), None)
}

/// `pomona validate DIR`: 0 when valid (warnings allowed), 2 when any error. Problems are
/// printed as `file:line: severity: Kind/name: message`.
pub fn validate(args: &ValidateArgs) -> u8 {
    if !args.dir.is_dir() {
        eprintln!("{}: not a directory", args.dir.display());
        return 2;
    }
    match load_as_given(&args.dir) {
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

#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// The candidate policy directory (e.g. a pull request's checkout); or give --git.
    #[arg(required_unless_present = "git", conflicts_with = "git")]
    pub dir: Option<PathBuf>,
    /// Plan a commit of this git repository instead (https://, ssh://, git@host:path, file://).
    #[arg(long, requires = "git_ref")]
    pub git: Option<String>,
    /// With --git: the branch, tag, ref (e.g. refs/pull/42/head) or commit SHA to plan.
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    /// With --git: the policy directory inside the repository (default: its root).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub path: String,
    /// With --git over https: file holding a token, or user:password.
    #[arg(long)]
    pub git_token_file: Option<PathBuf>,
    /// With --git over ssh: private key file (default: an ssh agent).
    #[arg(long)]
    pub git_ssh_key_file: Option<PathBuf>,
    /// With --git over ssh: known_hosts file the host key must be in.
    #[arg(long)]
    pub git_known_hosts: Option<PathBuf>,
    /// With --git over https: extra PEM CA certificate(s) to trust for the remote.
    #[arg(long)]
    pub git_ca_file: Option<PathBuf>,
    /// Compare against the fleet in this database (sqlite://… or postgres://…).
    #[arg(long, conflicts_with = "server")]
    pub database: Option<String>,
    /// Compare against a running server's fleet, through its admin API.
    #[arg(long)]
    pub server: Option<String>,
    /// With --server: file holding the admin token.
    #[arg(long, default_value = "pomona-data/admin-token")]
    pub admin_token_file: PathBuf,
    /// With --server: PEM CA certificate to trust for the server (default:
    /// pomona-data/tls/ca.pem when present).
    #[arg(long)]
    pub server_ca: Option<PathBuf>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `pomona plan DIR`: exit 0 no change, 1 changes, 2 error (invalid policy, unreachable fleet).
pub async fn plan(args: PlanArgs) -> u8 {
    match plan_inner(&args).await {
        Ok(preview) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&preview).unwrap_or_default()
                );
            } else {
                print!("{}", preview.render());
            }
            u8::from(preview.has_changes())
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

async fn plan_inner(args: &PlanArgs) -> anyhow::Result<crate::reconcile::preview::PlanPreview> {
    let Some(url) = &args.git else {
        let dir = args
            .dir
            .clone()
            .context("give a policy directory or --git URL")?;
        let snapshot = load_as_given(&dir);
        return plan_snapshot(args, &dir, snapshot).await;
    };
    let reference = args.git_ref.clone().unwrap_or_else(|| "main".into());
    let path = crate::policy::git::normalise_path(&args.path).map_err(|e| anyhow::anyhow!(e))?;
    let auth = crate::policy::git::GitAuth {
        token: match &args.git_token_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        },
        ssh_key: args.git_ssh_key_file.clone(),
        known_hosts: args.git_known_hosts.clone(),
    };
    if let Some(ca) = &args.git_ca_file {
        crate::policy::git::trust_ca_file(ca)
            .with_context(|| format!("loading --git-ca-file {}", ca.display()))?;
    }
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    eprintln!(
        "fetching {reference} from {}…",
        crate::policy::git::redact_url(url)
    );
    let (url, work_path, fetched_path) = (url.clone(), work.path().to_path_buf(), path.clone());
    let (root, commit) = tokio::task::spawn_blocking(move || {
        crate::policy::git::checkout_ref(&url, &reference, &fetched_path, &auth, &work_path)
    })
    .await??;
    eprintln!("planning commit {} ({})", commit.sha, commit.summary);
    let snapshot = crate::policy::source::load_tree(&root, &path, Some(commit.revision()));
    plan_snapshot(args, &root, snapshot).await
}

async fn plan_snapshot(
    args: &PlanArgs,
    dir: &std::path::Path,
    snapshot: Result<crate::policy::snapshot::PolicySnapshot, Vec<crate::policy::load::Problem>>,
) -> anyhow::Result<crate::reconcile::preview::PlanPreview> {
    let snapshot = snapshot.map_err(|problems| {
        anyhow::anyhow!(
            "the policy is invalid:\n{}",
            problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    if let Some(url) = &args.database {
        let store = crate::store::open(url)
            .await
            .context("opening the fleet database")?;
        return crate::reconcile::preview::preview(&*store, &snapshot).await;
    }
    let Some(server) = &args.server else {
        anyhow::bail!("give --database URL or --server URL to compare with a fleet");
    };
    let connection = AdminConnection {
        server: server.clone(),
        admin_token_file: args.admin_token_file.clone(),
        server_ca: args.server_ca.clone(),
    };
    let files = crate::policy::source::read_files(dir)?;
    connection
        .call(
            reqwest::Method::POST,
            "/api/v1/plan",
            Some(&crate::api::PlanRequest { files }),
        )
        .await
        .context("the server refused the plan")
}

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

/// `pomona status`: the policy revision and per-profile device counts, as a table.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let status: crate::api::Status = args
        .connection
        .call(reqwest::Method::GET, "/api/v1/status", None::<&()>)
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    print!("{}", render_status(&status));
    Ok(())
}

/// `pomona status` as text: the policy, then a table of profiles and one of actions.
fn render_status(status: &crate::api::Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let policy = &status.policy;
    let _ = writeln!(
        out,
        "policy revision: {}",
        policy.revision.as_deref().unwrap_or("(none loaded)")
    );
    if let Some(source) = &policy.source {
        let _ = writeln!(out, "source: {source}");
    }
    if let Some(commit) = &policy.commit {
        let _ = writeln!(out, "commit: {commit}");
    }
    if let Some(at) = &policy.last_fetch_at {
        let _ = writeln!(out, "last successful fetch: {at}");
    }
    if let Some(e) = &policy.last_fetch_error {
        let _ = writeln!(
            out,
            "last fetch FAILED (previous revision still serving): {e}"
        );
    }
    if let Some(errors) = &policy.last_error {
        let _ = writeln!(
            out,
            "last change REFUSED (previous revision still serving):"
        );
        for e in errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    let rollout = &status.rollout;
    if rollout.waiting_devices > 0 {
        let _ = writeln!(
            out,
            "rollout: {} devices waiting for a slot, {} installing (at most {} at once)",
            rollout.waiting_devices, rollout.installing_devices, rollout.max_devices
        );
    }
    let _ = writeln!(
        out,
        "{:<40} {:>8} {:>8} {:>8} {:>8} {:>8} {:>14}",
        "PROFILE", "TARGETED", "VERIFIED", "PENDING", "FAILED", "REMOVING", "REMOVAL-FAILED"
    );
    for p in &status.profiles {
        let _ = writeln!(
            out,
            "{:<40} {:>8} {:>8} {:>8} {:>8} {:>8} {:>14}",
            p.profile, p.targeted, p.verified, p.pending, p.failed, p.removing, p.removal_failed
        );
        for f in &p.failing_devices {
            let what = if f.phase == "removal" {
                "removal failed"
            } else {
                "failed"
            };
            let _ = writeln!(
                out,
                "    {what} on {}: {}",
                f.device_id,
                f.reason.as_deref().unwrap_or("?")
            );
        }
    }
    if !status.actions.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<32} {:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "ACTION", "KIND", "TARGETED", "PENDING", "SENT", "ACKED", "FAILED", "N/A"
        );
        for a in &status.actions {
            let c = &a.counts;
            let _ = writeln!(
                out,
                "{:<32} {:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                a.name,
                c.action,
                c.targeted,
                c.pending,
                c.sent,
                c.acknowledged,
                c.failed,
                c.not_applicable
            );
            for f in &a.failing_devices {
                let _ = writeln!(
                    out,
                    "    {} on {}: {}",
                    f.state,
                    f.device_id,
                    f.reason.as_deref().unwrap_or("?")
                );
            }
        }
    }
    out
}

#[derive(Debug, Clone, clap::Args)]
pub struct LabelArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    /// The device: its UDID (device id) or serial number.
    pub device: String,
    /// `key=value` sets a label, `key-` removes one (as `kubectl label`). With none, the
    /// device's labels are printed.
    pub changes: Vec<String>,
}

/// What one `pomona label` argument asks for.
#[derive(Debug, PartialEq, Eq)]
enum LabelChange {
    Set(String, String),
    Remove(String),
}

fn parse_label_change(arg: &str) -> anyhow::Result<LabelChange> {
    if let Some((key, value)) = arg.split_once('=') {
        crate::policy::selector::check_label(key, value).map_err(anyhow::Error::msg)?;
        return Ok(LabelChange::Set(key.into(), value.into()));
    }
    if let Some(key) = arg.strip_suffix('-') {
        return Ok(LabelChange::Remove(key.into()));
    }
    anyhow::bail!("{arg:?}: write key=value to set a label or key- to remove one")
}

/// `pomona label DEVICE [key=value | key-]...`: reads the device's labels, applies the changes
/// and writes them back; the device's groups (and so its profiles) follow.
pub async fn label(args: LabelArgs) -> anyhow::Result<()> {
    let changes = args
        .changes
        .iter()
        .map(|c| parse_label_change(c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let device: crate::api::DeviceDetail = args
        .connection
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/devices/{}", args.device),
            None::<&()>,
        )
        .await?;
    let mut labels = device.labels;
    if !changes.is_empty() {
        for change in changes {
            match change {
                LabelChange::Set(k, v) => {
                    labels.insert(k, v);
                }
                LabelChange::Remove(k) => {
                    labels.remove(&k);
                }
            }
        }
        let written: crate::api::Labels = args
            .connection
            .call(
                reqwest::Method::PUT,
                &format!("/api/v1/devices/{}/labels", device.device.device_id),
                Some(&crate::api::LabelsRequest { labels }),
            )
            .await?;
        labels = written.labels;
    }
    for (k, v) in &labels {
        println!("{k}={v}");
    }
    Ok(())
}

#[cfg(test)]
mod label_tests {
    use super::{parse_label_change, LabelChange};

    #[test]
    fn label_arguments_set_remove_or_are_refused() {
        assert_eq!(
            parse_label_change("team=sales").unwrap(),
            LabelChange::Set("team".into(), "sales".into())
        );
        assert_eq!(
            parse_label_change("team-").unwrap(),
            LabelChange::Remove("team".into())
        );
        assert!(parse_label_change("team").is_err());
        assert!(parse_label_change("pomona.dev/platform=iOS").is_err());
    }
}
