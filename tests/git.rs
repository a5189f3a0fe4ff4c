//! GitOps end to end, with real repositories made by the `git` binary (test code only; the
//! server uses libgit2): commits that add, change and remove a profile reach simulated devices;
//! an invalid commit keeps the previous revision serving and status names the commit; a
//! force-push is followed; `pomona plan --git` plans a branch against the fleet; webhooks with
//! good signatures fetch and bad ones are 401; an unreachable remote keeps the last good revision
//! and recovers (also across a restart); an https remote (`git http-backend` behind a TLS test
//! server) with a token; an ssh remote (a private `sshd`) whose host key must be in known_hosts;
//! only commits SSH-signed by allowed keys are applied; the example policy repository is valid.

#[path = "support/git_http.rs"]
mod git_http;
mod support;

use hmac::Mac as _;
use pomona::sim::device::SimDevice;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::TestServer;

/// A working repository and the bare remote it publishes to (`git push --force`).
struct Repo {
    work: PathBuf,
    remote: PathBuf,
    _dir: tempfile::TempDir,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run git ({e}): these tests need the git binary: apt-get install git")
        });
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Repo {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let remote = dir.path().join("remote.git");
        std::fs::create_dir_all(&work).unwrap();
        git(
            dir.path(),
            &["init", "-q", "--bare", "-b", "main", "remote.git"],
        );
        git(&work, &["init", "-q", "-b", "main"]);
        for (key, value) in [
            ("user.name", "Policy Author"),
            ("user.email", "author@example.com"),
            ("commit.gpgsign", "false"),
        ] {
            git(&work, &["config", key, value]);
        }
        git(
            &work,
            &["remote", "add", "origin", remote.to_str().unwrap()],
        );
        Self {
            work,
            remote,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("file://{}", self.remote.display())
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.work.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn remove(&self, relative: &str) {
        std::fs::remove_file(self.work.join(relative)).unwrap();
    }

    /// Commits everything and returns the commit's SHA.
    fn commit(&self, message: &str) -> String {
        self.commit_with(message, &[])
    }

    fn commit_with(&self, message: &str, extra: &[&str]) -> String {
        git(&self.work, &["add", "-A"]);
        let mut args = vec!["commit", "-q", "--allow-empty", "-m", message];
        args.extend_from_slice(extra);
        git(&self.work, &args);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Pushes the current branch to the remote's `branch`, rewriting history if need be.
    fn publish_to(&self, branch: &str) {
        git(
            &self.work,
            &["push", "-q", "--force", "origin", &format!("HEAD:{branch}")],
        );
    }

    fn publish(&self) {
        self.publish_to("main");
    }
}

const GROUPS: &str = "apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {name: everyone}
spec:
  selector: {}
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {name: phones}
spec:
  selector:
    matchExpressions:
      - {key: pomona.dev/platform, operator: In, values: [iOS]}
";

fn wifi(ssid: &str, group: &str) -> String {
    format!(
        "apiVersion: mdm.pomona.dev/v1alpha1
kind: Profile
metadata: {{name: wifi}}
spec:
  groups: [{group}]
  payloads:
    - payloadType: com.apple.wifi.managed
      content: {{SSID_STR: {ssid}, AutoJoin: true}}
"
    )
}

/// Polls status (letting devices talk) until `done` holds; fails with the last status.
async fn wait_for(
    server: &TestServer,
    devices: &mut [SimDevice],
    what: &str,
    done: impl Fn(&Value, &[SimDevice]) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for d in devices.iter_mut() {
            let _ = d.exchange().await;
        }
        let s = server.status().await;
        if done(&s, devices) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: not reached: {s:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn revision(sha: &str) -> String {
    format!("git:{}", &sha[..12])
}

fn wifi_profile(status: &Value) -> Value {
    status["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["profile"] == "Profile/wifi")
        .cloned()
        .unwrap_or(Value::Null)
}

fn installed_wifi(device: &SimDevice) -> Option<String> {
    device
        .state
        .profiles
        .get("dev.pomona.wifi")
        .map(|p| p.summary.uuid.clone())
}

fn run_cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pomona"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_reach_devices_a_bad_commit_keeps_the_last_good_one_and_force_pushes_are_followed()
{
    let repo = Repo::new();
    repo.write("README.md", "policy for the fleet\n");
    // Outside the policy path: never read, so its nonsense does not matter.
    repo.write("ci/broken.yaml", "this: [is not policy\n");
    repo.write("policies/groups.yaml", GROUPS);
    repo.write("policies/wifi.yaml", &wifi("Office", "everyone"));
    let added = repo.commit("Add office Wi-Fi");
    repo.publish();

    let url = repo.url();
    let server = TestServer::start_with(move |a| {
        a.git = Some(url);
        a.git_path = Some("policies/".into());
        a.git_interval = Some("200ms".into());
    })
    .await;
    let mut devices = Vec::new();
    for i in 0..3 {
        devices.push(server.enrolled_device(i).await);
    }

    // Added: every device gets the profile; status names the revision, commit and source.
    let s = wait_for(&server, &mut devices, "first commit", |s, _| {
        wifi_profile(s)["verified"] == 3
    })
    .await;
    assert_eq!(s["policy"]["revision"], revision(&added), "{s:#}");
    assert_eq!(s["policy"]["commit"], added.as_str(), "{s:#}");
    let source = s["policy"]["source"].as_str().unwrap();
    assert!(
        source.starts_with("git file://") && source.ends_with(" main policies"),
        "{source}"
    );
    assert!(s["policy"]["last_fetch_at"].is_string(), "{s:#}");
    assert!(s["policy"]["last_fetch_error"].is_null(), "{s:#}");
    let first_uuid = installed_wifi(&devices[0]).unwrap();

    // Changed: reinstalled everywhere with the new content.
    repo.write("policies/wifi.yaml", &wifi("Office-5G", "everyone"));
    let changed = repo.commit("Office Wi-Fi moves to 5 GHz");
    repo.publish();
    wait_for(&server, &mut devices, "changed profile", |s, devices| {
        s["policy"]["revision"] == revision(&changed)
            && devices
                .iter()
                .all(|d| installed_wifi(d).is_some_and(|uuid| uuid != first_uuid))
            && wifi_profile(s)["verified"] == 3
    })
    .await;

    // Invalid: refused, the error names the commit, the previous revision keeps serving.
    repo.write(
        "policies/wifi.yaml",
        "apiVersion: mdm.pomona.dev/v1alpha1\nkind: Profile\nmetadata: {name: wifi}\nspec: {groups: [nobody], payloads: []}\n",
    );
    let invalid = repo.commit("Target a group that does not exist");
    repo.publish();
    let s = wait_for(&server, &mut devices, "refused commit", |s, _| {
        s["policy"]["refused_commit"] == invalid.as_str()
    })
    .await;
    assert_eq!(s["policy"]["revision"], revision(&changed), "{s:#}");
    let errors: Vec<&str> = s["policy"]["last_error"]
        .as_array()
        .expect("last_error")
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(errors[0].contains(&invalid), "{errors:?}");
    assert!(
        errors.iter().any(|e| e.starts_with("policies/wifi.yaml:")),
        "problems are located in the repository: {errors:?}"
    );
    assert_eq!(wifi_profile(&s)["verified"], 3, "{s:#}");
    for d in &mut devices {
        d.exchange().await.unwrap();
    }
    assert!(devices.iter().all(|d| installed_wifi(d).is_some()));

    // History rewritten (the bad commit dropped by a force-push) and the profile removed.
    git(&repo.work, &["reset", "-q", "--hard", &changed]);
    repo.remove("policies/wifi.yaml");
    let removed = repo.commit("Remove the Wi-Fi profile");
    repo.publish();
    let s = wait_for(
        &server,
        &mut devices,
        "force-pushed removal",
        |s, devices| {
            s["policy"]["revision"] == revision(&removed)
                && devices.iter().all(|d| installed_wifi(d).is_none())
        },
    )
    .await;
    assert!(s["policy"]["last_error"].is_null(), "{s:#}");
    assert!(s["policy"]["refused_commit"].is_null(), "{s:#}");
    assert_eq!(s["policy"]["commit"], removed.as_str());

    // `pomona plan --git` on a pull request's branch, against the live fleet.
    repo.write("policies/wifi.yaml", &wifi("Office", "phones"));
    let proposal = repo.commit("Wi-Fi for phones");
    repo.publish_to("feature/phones-wifi");
    let db = format!("sqlite://{}", server.data_dir.join("pomona.db").display());
    let url = repo.url();
    let common = [
        "plan",
        "--git",
        &url,
        "--path",
        "policies",
        "--database",
        &db,
    ];
    let (code, out) = run_cli(&[&common[..], &["--ref", "feature/phones-wifi"]].concat());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&proposal), "names the planned commit: {out}");
    assert!(out.contains("Profile/wifi"), "{out}");
    let (code, out) = run_cli(&[&common[..], &["--ref", "main"]].concat());
    assert_eq!(code, 0, "the live revision changes nothing: {out}");
    let (code, out) = run_cli(&[&common[..], &["--ref", "no-such-branch"]].concat());
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no-such-branch"), "{out}");

    // Metrics carry the applied revision and the fetch time.
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(&format!(
            "pomona_policy_revision_info{{revision=\"{}\",commit=\"{removed}\"}} 1",
            revision(&removed)
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("pomona_git_last_successful_fetch_timestamp_seconds "),
        "{metrics}"
    );
    server.stop().await;
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_with_good_signatures_fetch_and_bad_ones_are_refused() {
    let repo = Repo::new();
    repo.write("groups.yaml", GROUPS);
    let first = repo.commit("Groups");
    repo.publish();
    let secrets = tempfile::tempdir().unwrap();
    let secret = "webhook-secret-0123456789";
    let secret_file = secrets.path().join("webhook-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let url = repo.url();
    let server = TestServer::start_with(move |a| {
        a.git = Some(url);
        a.git_interval = Some("1h".into()); // only webhooks fetch after the first
        a.git_webhook_secret_file = Some(secret_file);
    })
    .await;
    wait_for(&server, &mut [], "first fetch", |s, _| {
        s["policy"]["revision"] == revision(&first)
    })
    .await;

    repo.write("wifi.yaml", &wifi("Office", "everyone"));
    let second = repo.commit("Wi-Fi");
    repo.publish();
    let hook = format!("{}/hooks/git", server.base_url);
    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let post = |headers: Vec<(&'static str, String)>| {
        let mut request = server.client.post(&hook).body(body.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };

    for (what, headers) in [
        (
            "wrong HMAC",
            vec![(
                "X-Hub-Signature-256",
                github_signature("not-the-secret", &body),
            )],
        ),
        (
            "wrong GitLab token",
            vec![("X-Gitlab-Token", "guess".into())],
        ),
        ("no signature", vec![]),
    ] {
        let response = post(headers).await.unwrap();
        assert_eq!(response.status(), 401, "{what}");
        let json: Value = response.json().await.unwrap();
        assert!(json["error"].is_string(), "{what}: {json}");
        assert!(
            !json.to_string().contains(secret),
            "{what} leaks the secret"
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = server.status().await;
    assert_eq!(
        s["policy"]["revision"],
        revision(&first),
        "a refused webhook must not fetch: {s:#}"
    );

    let response = post(vec![(
        "X-Hub-Signature-256",
        github_signature(secret, &body),
    )])
    .await
    .unwrap();
    assert_eq!(response.status(), 202);
    wait_for(&server, &mut [], "fetch after a GitHub webhook", |s, _| {
        s["policy"]["revision"] == revision(&second)
    })
    .await;

    repo.write("wifi.yaml", &wifi("Office", "phones"));
    let third = repo.commit("Wi-Fi for phones only");
    repo.publish();
    let response = post(vec![("X-Gitlab-Token", secret.into())]).await.unwrap();
    assert_eq!(response.status(), 202);
    wait_for(&server, &mut [], "fetch after a GitLab webhook", |s, _| {
        s["policy"]["revision"] == revision(&third)
    })
    .await;

    // `pomona status` shows the revision and where it came from.
    let token = server.data_dir.join("admin-token");
    let ca = server.data_dir.join("tls/ca.pem");
    let (code, out) = run_cli(&[
        "status",
        "--server",
        &server.base_url,
        "--admin-token-file",
        token.to_str().unwrap(),
        "--server-ca",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("commit: {third}")), "{out}");
    assert!(out.contains("source: git file://"), "{out}");
    assert!(out.contains("last successful fetch: "), "{out}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_remote_keeps_the_last_good_revision_and_recovers() {
    let repo = Repo::new();
    repo.write("groups.yaml", GROUPS);
    let first = repo.commit("Groups");
    repo.publish();
    let url = repo.url();
    let server = TestServer::start_with(move |a| {
        a.git = Some(url);
        a.git_interval = Some("100ms".into());
    })
    .await;
    wait_for(&server, &mut [], "first fetch", |s, _| {
        s["policy"]["revision"] == revision(&first)
    })
    .await;

    let away = repo.remote.with_extension("away");
    std::fs::rename(&repo.remote, &away).unwrap();
    let s = wait_for(&server, &mut [], "fetch failure reported", |s, _| {
        s["policy"]["last_fetch_error"].is_string()
    })
    .await;
    assert_eq!(s["policy"]["revision"], revision(&first), "{s:#}");
    let error = s["policy"]["last_fetch_error"].as_str().unwrap();
    assert!(error.contains("remote.git"), "names the remote: {error}");
    let metrics = server.metrics().await;
    assert!(
        !metrics.contains("pomona_git_fetches_total{outcome=\"failure\"} 0"),
        "{metrics}"
    );

    repo.write("wifi.yaml", &wifi("Office", "everyone"));
    let second = repo.commit("Wi-Fi");
    git(
        &repo.work,
        &["push", "-q", "--force", away.to_str().unwrap(), "HEAD:main"],
    );
    std::fs::rename(&away, &repo.remote).unwrap();
    let s = wait_for(&server, &mut [], "recovery", |s, _| {
        s["policy"]["revision"] == revision(&second)
    })
    .await;
    assert!(s["policy"]["last_fetch_error"].is_null(), "{s:#}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_remote_is_fetched_with_a_token_and_a_wrong_token_is_reported() {
    let repo = Repo::new();
    repo.write("policies/groups.yaml", GROUPS);
    repo.write("policies/wifi.yaml", &wifi("Office", "everyone"));
    let first = repo.commit("Policy");
    repo.publish();
    let files = tempfile::tempdir().unwrap();
    let token = "ghp_test_token_0123456789";
    let http =
        git_http::GitHttpServer::start(repo.remote.parent().unwrap(), token, files.path()).await;
    let url = format!("{}/remote.git", http.base_url);
    let token_file = files.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let (u, t, ca) = (url.clone(), token_file.clone(), http.ca_file.clone());
    let server = TestServer::start_with(move |a| {
        a.git = Some(u);
        a.git_path = Some("policies".into());
        a.git_interval = Some("200ms".into());
        a.git_token_file = Some(t);
        a.git_ca_file = Some(ca);
    })
    .await;
    let s = wait_for(&server, &mut [], "fetch over https", |s, _| {
        s["policy"]["revision"] == revision(&first)
    })
    .await;
    assert!(s["policy"]["last_fetch_error"].is_null(), "{s:#}");
    assert!(
        http.refused.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the remote asked for credentials before serving"
    );
    let source = s["policy"]["source"].as_str().unwrap();
    assert!(source.starts_with("git https://localhost:"), "{source}");

    // `pomona plan --git` over https, with the token and the CA.
    let db = format!("sqlite://{}", server.data_dir.join("pomona.db").display());
    let args: Vec<String> = [
        "plan",
        "--git",
        &url,
        "--ref",
        "main",
        "--path",
        "policies",
        "--git-token-file",
        token_file.to_str().unwrap(),
        "--git-ca-file",
        http.ca_file.to_str().unwrap(),
        "--database",
        &db,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let (code, out) = tokio::task::spawn_blocking(move || {
        run_cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&first), "{out}");

    // The same remote with a wrong token: the error is reported, the token is not.
    let wrong = files.path().join("wrong-token");
    std::fs::write(&wrong, "ghp_wrong_wrong_wrong").unwrap();
    let ca = http.ca_file.clone();
    let other = TestServer::start_with(move |a| {
        a.git = Some(url);
        a.git_interval = Some("200ms".into());
        a.git_token_file = Some(wrong);
        a.git_ca_file = Some(ca);
    })
    .await;
    let s = wait_for(&other, &mut [], "authentication failure", |s, _| {
        s["policy"]["last_fetch_error"].is_string()
    })
    .await;
    let error = s["policy"]["last_fetch_error"].as_str().unwrap();
    assert!(error.contains("authentication"), "{error}");
    assert!(!error.contains("ghp_wrong"), "{error}");
    assert!(s["policy"]["revision"].is_null(), "{s:#}");
    other.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_commits_signed_by_allowed_ssh_keys_are_applied() {
    let repo = Repo::new();
    let keys = tempfile::tempdir().unwrap();
    let keygen = |name: &str| {
        let path = keys.path().join(name);
        ssh_keygen(&path, name);
        path
    };
    let trusted = keygen("release-manager");
    let stranger = keygen("stranger");
    let public = std::fs::read_to_string(trusted.with_extension("pub")).unwrap();
    let signers = keys.path().join("allowed_signers");
    std::fs::write(&signers, format!("release@example.com {public}")).unwrap();
    let sign_with = |key: &Path| vec!["-S".to_string(), format!("--gpg-sign={}", key.display())];
    git(&repo.work, &["config", "gpg.format", "ssh"]);
    let signed_commit = |message: &str, key: &Path| {
        let args = sign_with(key);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        repo.commit_with(message, &args)
    };

    repo.write("groups.yaml", GROUPS);
    let signed = signed_commit("Signed groups", &trusted);
    repo.publish();
    let url = repo.url();
    let server = TestServer::start_with(move |a| {
        a.git = Some(url);
        a.git_interval = Some("100ms".into());
        a.git_allowed_signers = Some(signers);
    })
    .await;
    wait_for(&server, &mut [], "signed commit applied", |s, _| {
        s["policy"]["revision"] == revision(&signed)
    })
    .await;

    for what in ["unsigned", "signed by a stranger"] {
        let commit = if what == "unsigned" {
            repo.write("wifi.yaml", &wifi("Office", "everyone"));
            repo.commit("Unsigned Wi-Fi")
        } else {
            repo.write("wifi.yaml", &wifi("Guest", "everyone"));
            signed_commit("Stranger's Wi-Fi", &stranger)
        };
        repo.publish();
        let s = wait_for(&server, &mut [], what, |s, _| {
            s["policy"]["refused_commit"] == commit.as_str()
        })
        .await;
        assert_eq!(s["policy"]["revision"], revision(&signed), "{what}: {s:#}");
        let reason = s["policy"]["last_error"][1].as_str().unwrap_or_default();
        assert!(reason.contains(&commit), "{what}: {reason}");
        let expected = if what == "unsigned" {
            "not signed"
        } else {
            "not an allowed signer"
        };
        assert!(reason.contains(expected), "{what}: {reason}");
    }

    repo.write("wifi.yaml", &wifi("Office", "everyone"));
    let good = signed_commit("Signed Wi-Fi", &trusted);
    repo.publish();
    wait_for(&server, &mut [], "signed commit applied again", |s, _| {
        s["policy"]["revision"] == revision(&good) && s["policy"]["last_error"].is_null()
    })
    .await;
    server.stop().await;
}

#[test]
fn the_example_policy_repository_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policy-repo/policies");
    let (code, out) = run_cli(&["validate", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid"), "{out}");
}

/// A private sshd on a loopback port, serving the current user with one client key.
struct Sshd {
    child: std::process::Child,
    port: u16,
    user: String,
    client_key: PathBuf,
    host_public: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ssh_keygen(path: &Path, comment: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (apt-get install openssh-client)");
    assert!(out.status.success(), "{out:?}");
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

impl Sshd {
    fn start(dir: &Path) -> Self {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "the ssh transport test needs sshd: apt-get install openssh-server"
        );
        // sshd insists on its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd")
            .expect("cannot create /run/sshd (needed by sshd; run the tests as root or create it)");
        let host_public = ssh_keygen(&dir.join("host_key"), "test-host");
        let client_public = ssh_keygen(&dir.join("client_key"), "pomona");
        std::fs::write(dir.join("authorized_keys"), format!("{client_public}\n")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 PidFile none\nLogLevel ERROR\n",
                dir.join("host_key").display(),
                dir.join("authorized_keys").display()
            ),
        )
        .unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .spawn()
            .expect("start sshd");
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            user,
            client_key: dir.join("client_key"),
            host_public,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssh_remote_is_fetched_only_when_its_host_key_is_known() {
    let repo = Repo::new();
    repo.write("groups.yaml", GROUPS);
    let first = repo.commit("Groups");
    repo.publish();
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        sshd.user,
        sshd.port,
        repo.remote.display()
    );

    // A known_hosts that lists another key for this host: refused, never prompted.
    let impostor = ssh_keygen(&dir.path().join("impostor"), "impostor");
    let wrong_hosts = dir.path().join("known_hosts_wrong");
    std::fs::write(
        &wrong_hosts,
        format!("[127.0.0.1]:{} {impostor}\n", sshd.port),
    )
    .unwrap();
    let (u, k, h) = (url.clone(), sshd.client_key.clone(), wrong_hosts);
    let server = TestServer::start_with(move |a| {
        a.git = Some(u);
        a.git_interval = Some("200ms".into());
        a.git_ssh_key_file = Some(k);
        a.git_known_hosts = Some(h);
    })
    .await;
    let s = wait_for(&server, &mut [], "unknown host key refused", |s, _| {
        s["policy"]["last_fetch_error"].is_string()
    })
    .await;
    let error = s["policy"]["last_fetch_error"].as_str().unwrap();
    assert!(error.contains("host key of 127.0.0.1"), "{error}");
    assert!(s["policy"]["revision"].is_null(), "{s:#}");
    server.stop().await;

    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_public),
    )
    .unwrap();
    let k = sshd.client_key.clone();
    let server = TestServer::start_with(move |a| {
        a.git = Some(url);
        a.git_interval = Some("200ms".into());
        a.git_ssh_key_file = Some(k);
        a.git_known_hosts = Some(known_hosts);
    })
    .await;
    let s = wait_for(&server, &mut [], "fetch over ssh", |s, _| {
        s["policy"]["revision"] == revision(&first)
    })
    .await;
    assert!(s["policy"]["last_fetch_error"].is_null(), "{s:#}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_with_the_remote_down_the_local_clone_keeps_serving() {
    let repo = Repo::new();
    repo.write("groups.yaml", GROUPS);
    repo.write("wifi.yaml", &wifi("Office", "everyone"));
    let first = repo.commit("Policy");
    repo.publish();
    let data = tempfile::tempdir().unwrap();
    let url = repo.url();
    let settings = move |a: &mut pomona::config::ServeArgs| {
        a.git = Some(url.clone());
        a.git_interval = Some("200ms".into());
    };
    let server = TestServer::start_in(data.path().to_path_buf(), settings.clone()).await;
    wait_for(&server, &mut [], "first fetch", |s, _| {
        s["policy"]["revision"] == revision(&first)
    })
    .await;
    server.stop().await;

    std::fs::rename(&repo.remote, repo.remote.with_extension("away")).unwrap();
    let server = TestServer::start_in(data.path().to_path_buf(), settings).await;
    let s = wait_for(&server, &mut [], "served from the local clone", |s, _| {
        s["policy"]["revision"] == revision(&first)
    })
    .await;
    assert!(s["policy"]["last_fetch_error"].is_string(), "{s:#}");
    assert_eq!(s["policy"]["commit"], first.as_str());
    server.stop().await;
}
