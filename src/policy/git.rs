//! The git policy source: a bare clone of one branch kept in the data directory, fetched on a
//! jittered interval and whenever a webhook asks (`GitSource::trigger`), through libgit2 (no git
//! binary at run time; https with a token, ssh with a key and known_hosts, file://). Each new
//! head commit's tree under the policy path is read straight from the object database and
//! validated by the very loader the directory source uses (`source::load_tree`); a valid commit
//! is published on the `PolicyFeed` as the new snapshot (revision `git:<short sha>`), an invalid
//! one as a refusal with its SHA while the last good revision keeps serving. An unreachable remote is retried with backoff.
//! This module owns fetching and turning commits into snapshots; it never talks to devices and
//! never parses HTTP (the webhook route lives in `server::hooks`).

use super::feed::{PolicyFeed, PolicyUpdate};
use super::load::{Problem, Severity};
use super::snapshot::PolicySnapshot;
use super::source;
use git2::{CertificateCheckStatus, FetchOptions, Oid, RemoteCallbacks, Repository};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Credentials and trust for reaching a remote. Secrets are read from files at start and never
/// printed (`Debug` redacts them).
#[derive(Clone, Default)]
pub struct GitAuth {
    /// https: `user:password`, or a token (sent as the password of user `x-access-token`, which
    /// GitHub and GitLab accept for tokens).
    pub token: Option<String>,
    /// ssh: the private key file (without one, an ssh agent is asked).
    pub ssh_key: Option<PathBuf>,
    /// ssh: the known_hosts file the server's host key must be listed in.
    pub known_hosts: Option<PathBuf>,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAuth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ssh_key", &self.ssh_key)
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

/// `pomona serve --git …`.
#[derive(Clone)]
pub struct GitSettings {
    pub url: String,
    pub branch: String,
    /// The policy directory inside the repository, without leading or trailing `/` (empty: the
    /// repository root).
    pub path: String,
    pub interval: Duration,
    pub auth: GitAuth,
    /// Shared secret of `POST /hooks/git` (without one the webhook is off).
    pub webhook_secret: Option<String>,
    /// When set, only commits signed (SSH signatures) by one of these keys are applied.
    pub allowed_signers: Option<Vec<super::git_signature::AllowedSigner>>,
}

impl std::fmt::Debug for GitSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSettings")
            .field("url", &redact_url(&self.url))
            .field("branch", &self.branch)
            .field("path", &self.path)
            .field("interval", &self.interval)
            .field("auth", &self.auth)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "allowed_signers",
                &self.allowed_signers.as_ref().map(|s| s.len()),
            )
            .finish()
    }
}

impl GitSettings {
    /// `git <url> <branch> <path>`, as status shows the source.
    pub fn describe(&self) -> String {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        format!("git {} {} {path}", redact_url(&self.url), self.branch)
    }
}

/// A policy path that would leave the repository.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} must be a relative path inside the repository (no `..`, no `//`)")]
pub struct PathOutsideRepository(pub String);

/// Normalises a policy path: no leading/trailing `/`, no `..`.
pub fn normalise_path(path: &str) -> Result<String, PathOutsideRepository> {
    let trimmed = path.trim().trim_matches('/');
    if trimmed
        .split('/')
        .any(|part| part == ".." || (part.is_empty() && !trimmed.is_empty()))
    {
        return Err(PathOutsideRepository(path.to_string()));
    }
    Ok(if trimmed == "." {
        String::new()
    } else {
        trimmed.to_string()
    })
}

/// What kind of remote a URL names; `None` when it is none Pomona supports.
pub fn transport(url: &str) -> Option<&'static str> {
    if url.starts_with("https://") {
        Some("https")
    } else if url.starts_with("ssh://") {
        Some("ssh")
    } else if url.starts_with("file://") {
        Some("file")
    } else if !url.contains("://") && url.contains('@') && url.contains(':') {
        Some("ssh") // scp-like: git@host:org/repo.git
    } else {
        None
    }
}

/// A URL without its `user:password@` part, for logs and status.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let user = &rest[..at];
            let shown = if user.contains(':') {
                "<redacted>@"
            } else {
                &rest[..=at]
            };
            return format!("{scheme}://{shown}{}", &rest[at + 1..]);
        }
    }
    url.to_string()
}

/// Adds a PEM CA file to what libgit2 trusts for https remotes (besides the system roots).
/// The setting is process-wide: each file is installed once.
pub fn trust_ca_file(path: &Path) -> Result<(), git2::Error> {
    static INSTALLED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if installed.iter().any(|p| p == path) {
        return Ok(());
    }
    // SAFETY: libgit2 options are process-wide; the lock keeps two starts from racing here,
    // and it is called at start, before this server fetches anything.
    unsafe { git2::opts::set_ssl_cert_file(path) }?;
    installed.push(path.to_path_buf());
    Ok(())
}

/// Why a fetch failed (the remote, credentials, the branch): retried with backoff.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

fn fetch_error(what: &str, url: &str, e: git2::Error) -> FetchError {
    // libgit2 messages may repeat the URL; never let credentials in it through.
    let message = e.message().replace(url, &redact_url(url));
    FetchError(format!("{what} {}: {message}", redact_url(url)))
}

/// Callbacks answering credential requests and checking host keys. A host key refusal's reason
/// is left in `refusal` (libgit2 replaces the callback's error with a generic message).
fn callbacks<'a>(auth: &'a GitAuth, refusal: &'a Mutex<Option<String>>) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    let mut attempts = 0;
    callbacks.credentials(move |_url, username, allowed| {
        attempts += 1;
        if attempts > 3 {
            return Err(git2::Error::from_str(
                "authentication failed: the remote refused the configured credentials",
            ));
        }
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            let user = username.unwrap_or("git");
            return match &auth.ssh_key {
                Some(key) => git2::Cred::ssh_key(user, None, key, None),
                None => git2::Cred::ssh_key_from_agent(user),
            };
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            if let Some(token) = &auth.token {
                let (user, password) = match token.split_once(':') {
                    Some((user, password)) => (user, password),
                    None => ("x-access-token", token.as_str()),
                };
                return git2::Cred::userpass_plaintext(user, password);
            }
            return Err(git2::Error::from_str(
                "the remote asks for credentials: give --git-token-file",
            ));
        }
        if allowed.contains(git2::CredentialType::USERNAME) {
            return git2::Cred::username(username.unwrap_or("git"));
        }
        Err(git2::Error::from_str(
            "the remote asks for a kind of credentials Pomona does not have",
        ))
    });
    callbacks.certificate_check(move |cert, host| {
        let Some(hostkey) = cert.as_hostkey() else {
            // https: libgit2's own certificate verification decides.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let (Some(key), Some(kind)) = (hostkey.hostkey(), hostkey.hostkey_type()) else {
            return Err(git2::Error::from_str(
                "the ssh server's host key could not be read",
            ));
        };
        let Some(known_hosts) = &auth.known_hosts else {
            return Err(git2::Error::from_str(
                "ssh host key not checked: give --git-known-hosts",
            ));
        };
        let text = std::fs::read_to_string(known_hosts).map_err(|e| {
            git2::Error::from_str(&format!(
                "cannot read known_hosts {}: {e}",
                known_hosts.display()
            ))
        })?;
        if known_host(&text, host, kind.name(), key) {
            Ok(CertificateCheckStatus::CertificateOk)
        } else {
            let reason = format!(
                "the ssh host key of {host} ({}) is not in {}: add it (ssh-keyscan {host}) \
                 after checking its fingerprint",
                kind.name(),
                known_hosts.display()
            );
            *refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
            Err(git2::Error::from_str(&reason))
        }
    });
    callbacks
}

/// Whether `known_hosts` text lists `host` with exactly this key. Plain host patterns only
/// (`host`, `[host]:port`, comma-separated); hashed (`|1|…`) entries never match.
pub fn known_host(known_hosts: &str, host: &str, kind: &str, key: &[u8]) -> bool {
    use base64::Engine as _;
    known_hosts.lines().any(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            return false;
        }
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(line_kind), Some(blob)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        let host_matches = hosts.split(',').any(|pattern| {
            pattern == host
                || pattern
                    .strip_prefix('[')
                    .and_then(|p| p.split_once("]:"))
                    .is_some_and(|(name, _port)| name == host)
        });
        host_matches
            && line_kind == kind
            && base64::engine::general_purpose::STANDARD
                .decode(blob)
                .is_ok_and(|decoded| decoded == key)
    })
}

/// Bounds every network wait of libgit2 (process-wide, set once before the first fetch): a
/// remote that accepts the connection and then hangs fails the fetch instead of stalling the
/// source forever.
fn set_timeouts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: plain integer options, set once before any fetch of this process.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(30_000);
            let _ = git2::opts::set_server_timeout_in_milliseconds(120_000);
        }
    });
}

/// Opens (or creates) the bare repository at `dir` and fetches `refspecs` from `url`.
pub fn fetch(
    dir: &Path,
    url: &str,
    refspecs: &[String],
    auth: &GitAuth,
) -> Result<Repository, FetchError> {
    set_timeouts();
    let repo = match Repository::open_bare(dir) {
        Ok(repo) => repo,
        Err(_) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| FetchError(format!("cannot create {}: {e}", dir.display())))?;
            Repository::init_bare(dir).map_err(|e| {
                FetchError(format!(
                    "cannot create a repository in {}: {e}",
                    dir.display()
                ))
            })?
        }
    };
    {
        let mut remote = repo
            .remote_anonymous(url)
            .map_err(|e| fetch_error("invalid remote", url, e))?;
        let refusal = Mutex::new(None);
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks(auth, &refusal));
        options.download_tags(git2::AutotagOption::None);
        let fetched = remote.fetch(refspecs, Some(&mut options), Some("pomona fetch"));
        drop(options);
        if let Err(e) = fetched {
            return Err(
                match refusal.into_inner().unwrap_or_else(|p| p.into_inner()) {
                    Some(reason) => {
                        FetchError(format!("cannot fetch from {}: {reason}", redact_url(url)))
                    }
                    None => fetch_error("cannot fetch from", url, e),
                },
            );
        }
    }
    Ok(repo)
}

/// The local name a fetched branch is kept under.
fn tracking_ref(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}

/// One commit, as status and logs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub sha: String,
    pub summary: String,
}

impl CommitInfo {
    pub fn revision(&self) -> String {
        format!("git:{}", &self.sha[..12.min(self.sha.len())])
    }
}

/// Writes the tree of `commit` under `path` into `into` (a fresh directory). Problems (the path
/// is missing, a symlink or submodule in it) are reported against the commit.
fn write_tree(
    repo: &Repository,
    commit: &git2::Commit<'_>,
    path: &str,
    into: &Path,
) -> Result<(), Vec<Problem>> {
    let problem = |file: &str, message: String| Problem {
        severity: Severity::Error,
        file: file.to_string(),
        line: 1,
        document: None,
        message,
    };
    let root = commit
        .tree()
        .map_err(|e| vec![problem(path, format!("cannot read the commit's tree: {e}"))])?;
    let tree = if path.is_empty() {
        root
    } else {
        let entry = root.get_path(Path::new(path)).map_err(|_| {
            vec![problem(
                path,
                format!("the policy path {path:?} does not exist in this commit"),
            )]
        })?;
        match entry.to_object(repo).ok().and_then(|o| o.into_tree().ok()) {
            Some(tree) => tree,
            None => {
                return Err(vec![problem(
                    path,
                    format!("the policy path {path:?} is not a directory in this commit"),
                )])
            }
        }
    };
    let mut problems = Vec::new();
    std::fs::create_dir_all(into).map_err(|e| vec![problem(path, format!("{e}"))])?;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or("");
        let relative = format!("{dir}{name}");
        let shown = Path::new(path).join(&relative).display().to_string();
        if name.starts_with('.') {
            return git2::TreeWalkResult::Skip; // hidden, as in the directory source
        }
        match entry.kind() {
            Some(git2::ObjectType::Tree) => {
                if let Err(e) = std::fs::create_dir_all(into.join(&relative)) {
                    problems.push(problem(&shown, format!("{e}")));
                }
            }
            Some(git2::ObjectType::Blob) if entry.filemode() == 0o120000 => {
                problems.push(problem(
                    &shown,
                    "is a symbolic link: git sources do not follow links; commit the file itself"
                        .into(),
                ));
            }
            Some(git2::ObjectType::Blob) => match repo.find_blob(entry.id()) {
                Ok(blob) => {
                    if let Err(e) = std::fs::write(into.join(&relative), blob.content()) {
                        problems.push(problem(&shown, format!("{e}")));
                    }
                }
                Err(e) => problems.push(problem(&shown, format!("cannot read: {e}"))),
            },
            _ => problems.push(problem(
                &shown,
                "is a submodule: policy must live in the repository itself".into(),
            )),
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(|e| vec![problem(path, format!("cannot walk the tree: {e}"))])?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Validates `commit` exactly like a policy directory: its tree under `path` is written into
/// `scratch` (emptied first) and read by `source::load_tree`.
pub fn load_commit(
    repo: &Repository,
    oid: Oid,
    path: &str,
    scratch: &Path,
) -> Result<PolicySnapshot, Vec<Problem>> {
    let commit = repo.find_commit(oid).map_err(|e| {
        vec![Problem {
            severity: Severity::Error,
            file: path.to_string(),
            line: 1,
            document: None,
            message: format!("cannot read commit {oid}: {e}"),
        }]
    })?;
    let info = commit_info(&commit);
    let _ = std::fs::remove_dir_all(scratch);
    let result = write_tree(repo, &commit, path, scratch)
        .and_then(|()| source::load_tree(scratch, path, Some(info.revision())));
    let _ = std::fs::remove_dir_all(scratch);
    result
}

fn commit_info(commit: &git2::Commit<'_>) -> CommitInfo {
    CommitInfo {
        sha: commit.id().to_string(),
        summary: commit.summary().unwrap_or("").to_string(),
    }
}

/// Fetches `reference` (a branch, a tag, `refs/pull/N/head`, or a commit SHA) of `url` into a
/// scratch repository under `work` and writes its policy tree into `work/policy` (for `pomona
/// plan --git`). Returns that directory and the commit.
pub fn checkout_ref(
    url: &str,
    reference: &str,
    path: &str,
    auth: &GitAuth,
    work: &Path,
) -> anyhow::Result<(PathBuf, CommitInfo)> {
    let mut refspecs = vec![
        "+refs/heads/*:refs/remotes/origin/*".to_string(),
        "+refs/tags/*:refs/tags/*".to_string(),
    ];
    if reference.starts_with("refs/") && !reference.starts_with("refs/heads/") {
        refspecs.push(format!("+{reference}:refs/pomona/plan"));
    }
    let repo = fetch(&work.join("repo.git"), url, &refspecs, auth)?;
    let candidates = [
        "refs/pomona/plan".to_string(),
        tracking_ref(reference.trim_start_matches("refs/heads/")),
        format!("refs/tags/{reference}"),
        reference.to_string(),
    ];
    let commit = candidates
        .iter()
        .find_map(|c| repo.revparse_single(c).ok()?.peel_to_commit().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{reference:?} is not a branch, tag, ref or commit of {}",
                redact_url(url)
            )
        })?;
    let info = commit_info(&commit);
    let root = work.join("policy");
    write_tree(&repo, &commit, path, &root).map_err(|problems| {
        anyhow::anyhow!(
            "commit {}: {}",
            info.sha,
            problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    Ok((root, info))
}

/// What one fetch found.
enum Outcome {
    /// The branch head is the commit already handled.
    Unchanged,
    Applied(CommitInfo, Box<PolicySnapshot>),
    Refused(CommitInfo, Vec<String>),
}

/// Fetch state shown by status and metrics.
#[derive(Debug, Clone, Default)]
pub struct FetchStats {
    pub fetches: u64,
    pub failures: u64,
    pub last_success_ms: Option<i64>,
}

/// The running git source: owns the clone, the fetch loop and the webhook trigger.
pub struct GitSource {
    pub settings: GitSettings,
    repo_dir: PathBuf,
    scratch: PathBuf,
    trigger: tokio::sync::Notify,
    stats: Mutex<FetchStats>,
}

impl GitSource {
    /// The clone lives in `<data_dir>/git/<hash of the URL>.git`.
    pub fn new(settings: GitSettings, data_dir: &Path) -> Arc<Self> {
        use sha2::Digest as _;
        let id = &hex::encode(sha2::Sha256::digest(settings.url.as_bytes()))[..16];
        let base = data_dir.join("git");
        Arc::new(Self {
            repo_dir: base.join(format!("{id}.git")),
            scratch: base.join(format!("{id}.tree")),
            settings,
            trigger: tokio::sync::Notify::new(),
            stats: Mutex::new(FetchStats::default()),
        })
    }

    /// Asks for a fetch now (webhooks). Requests arriving during a fetch coalesce into one more.
    pub fn trigger(&self) {
        self.trigger.notify_one();
    }

    pub fn stats(&self) -> FetchStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Fetches the branch and, when its head moved, validates the new commit.
    fn fetch_and_load(&self, last: Option<&str>) -> Result<Outcome, FetchError> {
        let branch = &self.settings.branch;
        let refspec = format!("+refs/heads/{branch}:{}", tracking_ref(branch));
        let repo = fetch(
            &self.repo_dir,
            &self.settings.url,
            &[refspec],
            &self.settings.auth,
        )?;
        self.load_head(&repo, last)
    }

    /// Validates the fetched head of the branch unless it is `last`.
    fn load_head(&self, repo: &Repository, last: Option<&str>) -> Result<Outcome, FetchError> {
        let branch = &self.settings.branch;
        let head = repo
            .refname_to_id(&tracking_ref(branch))
            .map_err(|_| FetchError(format!("the remote has no branch {branch:?}")))?;
        if last == Some(head.to_string().as_str()) {
            return Ok(Outcome::Unchanged);
        }
        let commit = repo
            .find_commit(head)
            .map_err(|e| FetchError(format!("cannot read commit {head}: {e}")))?;
        let info = commit_info(&commit);
        if let Some(signers) = &self.settings.allowed_signers {
            if let Err(refused) = super::git_signature::verify_commit(repo, head, signers) {
                return Ok(Outcome::Refused(info, vec![refused.to_string()]));
            }
        }
        match load_commit(repo, head, &self.settings.path, &self.scratch) {
            Ok(snapshot) => Ok(Outcome::Applied(info, Box::new(snapshot))),
            Err(problems) => Ok(Outcome::Refused(
                info,
                problems.iter().map(|p| p.to_string()).collect(),
            )),
        }
    }

    /// At start, before the remote answered: the head of the local clone, if any.
    fn load_local(&self) -> Option<Outcome> {
        let repo = Repository::open_bare(&self.repo_dir).ok()?;
        self.load_head(&repo, None).ok()
    }

    /// Fetches now, then on the jittered interval, on webhooks, and with backoff after
    /// failures, publishing each new head (applied or refused) and each fetch's outcome to
    /// `feed`. Runs until aborted.
    pub async fn run(self: Arc<Self>, feed: PolicyFeed) {
        let source = self.settings.describe();
        feed.send(PolicyUpdate::Started {
            description: source.clone(),
        });
        let mut handled: Option<String> = None;
        let mut failures: u32 = 0;
        loop {
            let this = self.clone();
            let last = handled.clone();
            let result =
                tokio::task::spawn_blocking(move || this.fetch_and_load(last.as_deref())).await;
            let result = result.unwrap_or_else(|e| Err(FetchError(format!("fetch crashed: {e}"))));
            let outcome = match result {
                Ok(outcome) => {
                    failures = 0;
                    let now = crate::vocab::clock::now_millis();
                    {
                        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                        stats.fetches += 1;
                        stats.last_success_ms = Some(now);
                    }
                    feed.send(PolicyUpdate::FetchSucceeded { at: now });
                    Some(outcome)
                }
                Err(e) => {
                    failures += 1;
                    self.stats
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .failures += 1;
                    let retry = backoff(self.settings.interval, failures);
                    tracing::warn!(
                        source = %source,
                        error = %e,
                        failures,
                        retry_in_ms = retry.as_millis() as u64,
                        "git fetch failed; the last good revision keeps serving"
                    );
                    feed.send(PolicyUpdate::FetchFailed {
                        error: e.to_string(),
                    });
                    if handled.is_none() {
                        // Nothing served yet: the local clone's head (from before a restart).
                        let this = self.clone();
                        tokio::task::spawn_blocking(move || this.load_local())
                            .await
                            .ok()
                            .flatten()
                    } else {
                        None
                    }
                }
            };
            match outcome {
                None | Some(Outcome::Unchanged) => {}
                Some(Outcome::Applied(info, snapshot)) => {
                    for warning in &snapshot.warnings {
                        tracing::warn!(%warning, commit = %info.sha, "policy warning");
                    }
                    tracing::info!(
                        source = %source,
                        revision = %snapshot.revision,
                        commit = %info.sha,
                        summary = %info.summary,
                        groups = snapshot.groups.len(),
                        profiles = snapshot.profiles.len(),
                        "policy commit applied"
                    );
                    handled = Some(info.sha.clone());
                    feed.send(PolicyUpdate::Applied {
                        snapshot,
                        commit: Some(info.sha),
                    });
                }
                Some(Outcome::Refused(info, problems)) => {
                    let mut texts = vec![format!(
                        "commit {} ({:?}) is refused; the previous revision keeps serving",
                        info.sha, info.summary
                    )];
                    texts.extend(problems);
                    for problem in &texts[1..] {
                        tracing::error!(commit = %info.sha, %problem, "invalid policy commit; the previous revision keeps serving");
                    }
                    handled = Some(info.sha.clone());
                    feed.send(PolicyUpdate::Refused {
                        problems: texts,
                        commit: Some(info.sha),
                    });
                }
            }
            let delay = if failures > 0 {
                backoff(self.settings.interval, failures)
            } else {
                jitter(self.settings.interval)
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.trigger.notified() => {
                    tracing::debug!(source = %source, "fetch requested by webhook");
                }
            }
        }
    }
}

/// The interval ±10 %.
fn jitter(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + fastrand::f64() * 0.2)
}

/// Delay before retrying after `failures` failed fetches in a row: doubling from the smaller of
/// the interval and 5 s, up to the larger of the interval and 5 min, ±10 %.
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let base = interval.min(Duration::from_secs(5));
    let cap = interval.max(Duration::from_secs(300));
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    jitter(base.saturating_mul(factor).min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_paths_are_normalised_and_kept_inside_the_repository() {
        assert_eq!(normalise_path("policies/").unwrap(), "policies");
        assert_eq!(normalise_path("/a/b/").unwrap(), "a/b");
        assert_eq!(normalise_path("").unwrap(), "");
        assert_eq!(normalise_path(".").unwrap(), "");
        assert!(normalise_path("../etc").is_err());
        assert!(normalise_path("a//b").is_err());
    }

    #[test]
    fn transports_are_recognised() {
        assert_eq!(transport("https://github.com/o/r.git"), Some("https"));
        assert_eq!(transport("ssh://git@host:2222/o/r.git"), Some("ssh"));
        assert_eq!(transport("git@github.com:o/r.git"), Some("ssh"));
        assert_eq!(transport("file:///srv/r.git"), Some("file"));
        assert_eq!(transport("http://host/r.git"), None);
        assert_eq!(transport("/srv/r.git"), None);
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redact_url("https://user:secret@host/r.git"),
            "https://<redacted>@host/r.git"
        );
        assert_eq!(redact_url("ssh://git@host/r.git"), "ssh://git@host/r.git");
        assert_eq!(redact_url("file:///srv/r.git"), "file:///srv/r.git");
    }

    #[test]
    fn known_hosts_match_only_the_listed_key() {
        use base64::Engine as _;
        let key = b"\x00\x00\x00\x0bssh-ed25519 key bytes";
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let text = format!(
            "# comment\n|1|hashed|entry ssh-ed25519 {b64}\nother.example ssh-ed25519 {b64}\n\
             git.example,10.0.0.1 ssh-ed25519 {b64}\n[ssh.example]:2222 ssh-ed25519 {b64}\n"
        );
        assert!(known_host(&text, "git.example", "ssh-ed25519", key));
        assert!(known_host(&text, "10.0.0.1", "ssh-ed25519", key));
        assert!(known_host(&text, "ssh.example", "ssh-ed25519", key));
        assert!(!known_host(&text, "git.example", "ssh-rsa", key));
        assert!(!known_host(
            &text,
            "git.example",
            "ssh-ed25519",
            b"another key"
        ));
        assert!(!known_host(&text, "unknown.example", "ssh-ed25519", key));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let i = Duration::from_secs(60);
        let b1 = backoff(i, 1);
        assert!(b1 >= Duration::from_millis(4500) && b1 <= Duration::from_millis(5500));
        let b3 = backoff(i, 3);
        assert!(b3 >= Duration::from_secs(18) && b3 <= Duration::from_secs(22));
        let b20 = backoff(i, 20);
        assert!(b20 <= Duration::from_secs(330) && b20 >= Duration::from_secs(270));
        let fast = backoff(Duration::from_millis(100), 1);
        assert!(fast <= Duration::from_millis(110));
    }
}
