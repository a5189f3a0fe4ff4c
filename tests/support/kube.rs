//! A real Kubernetes control plane for tests: `etcd` and `kube-apiserver` (built from Go
//! modules by `scripts/envtest` and cached under ~/.cache/pomona-envtest/) started on loopback
//! ports with fresh certificates, a static token file (an admin in `system:masters`, and the
//! controller's service account identity, which only the deploy/ RBAC authorises), and RBAC
//! authorisation; plus `kubectl` with a generated kubeconfig. Missing binaries fail the test
//! with the command that builds them — never a silent skip.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Must match `KUBERNETES_VERSION` in scripts/envtest.
pub const KUBERNETES_VERSION: &str = "v1.34.4";
pub const ADMIN_TOKEN: &str = "envtest-admin-token-0123456789";
pub const CONTROLLER_TOKEN: &str = "envtest-controller-token-0123456789";
/// The service account the deploy/ manifests run the controller as.
pub const CONTROLLER_USER: &str = "system:serviceaccount:pomona-system:pomona";

/// Where the envtest binaries are: $POMONA_ENVTEST_DIR, else the script's cache.
pub fn binaries() -> PathBuf {
    let dir = super::tool_path(
        "POMONA_ENVTEST_DIR",
        &Path::new(".cache/pomona-envtest").join(KUBERNETES_VERSION),
    );
    for binary in ["etcd", "kube-apiserver", "kubectl"] {
        assert!(
            dir.join(binary).is_file(),
            "{} is missing: run `scripts/envtest` (builds etcd, kube-apiserver and kubectl {KUBERNETES_VERSION} \
             from Go modules into ~/.cache/pomona-envtest/; needs Go) or set POMONA_ENVTEST_DIR",
            dir.join(binary).display()
        );
    }
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(name: &'static str, binary: &Path, args: &[String], dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Self { name, child, log }
    }

    /// Why the process has exited (its status and the end of its log), if it has.
    fn exited(&mut self) -> Option<String> {
        let Ok(Some(status)) = self.child.try_wait() else {
            return None;
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        Some(format!(
            "{} exited ({status}); its log ends:\n{tail}",
            self.name
        ))
    }

    fn assert_running(&mut self) {
        if let Some(why) = self.exited() {
            panic!("{why}");
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts kube-apiserver on `port` against etcd at `etcd_url`, with the certificates, keys and
/// tokens written in `d`.
fn start_apiserver(bin: &Path, d: &Path, etcd_url: &str, port: u16) -> Process {
    let file = |name: &str| d.join(name).display().to_string();
    Process::start(
        "kube-apiserver",
        &bin.join("kube-apiserver"),
        &[
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", file("serving.pem")),
            format!("--tls-private-key-file={}", file("serving-key.pem")),
            format!("--token-auth-file={}", file("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-key-file={}", file("sa.pem")),
            format!("--service-account-signing-key-file={}", file("sa-key.pem")),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            format!("--cert-dir={}", file("certs")),
            "--v=0".into(),
        ],
        d,
    )
}

/// etcd + kube-apiserver, torn down on drop.
pub struct ApiServer {
    pub url: String,
    pub dir: tempfile::TempDir,
    /// Admin kubeconfig (system:masters).
    pub kubeconfig: PathBuf,
    /// Kubeconfig of the controller's service account identity (deploy/ RBAC only).
    pub controller_kubeconfig: PathBuf,
    bin: PathBuf,
    etcd_url: String,
    // Declared in stop order: the API server before etcd.
    apiserver: Process,
    _etcd: Process,
}

impl ApiServer {
    pub async fn start() -> Self {
        let bin = binaries();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();

        let (client_port, peer_port) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Process::start(
            "etcd",
            &bin.join("etcd"),
            &[
                format!("--data-dir={}", d.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--name=default".into(),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            d,
        );

        // Serving certificate from a throwaway CA; service-account signing key; tokens.
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pomona envtest CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let serving_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let serving_key = KeyPair::generate().unwrap();
        let serving = serving_params
            .signed_by(&serving_key, &ca, &ca_key)
            .unwrap();
        std::fs::write(d.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(d.join("serving.pem"), serving.pem()).unwrap();
        std::fs::write(d.join("serving-key.pem"), serving_key.serialize_pem()).unwrap();
        let sa_key = KeyPair::generate().unwrap();
        std::fs::write(d.join("sa-key.pem"), sa_key.serialize_pem()).unwrap();
        std::fs::write(d.join("sa.pem"), sa_key.public_key_pem()).unwrap();
        std::fs::write(
            d.join("tokens.csv"),
            format!(
                "{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n\
                 {CONTROLLER_TOKEN},{CONTROLLER_USER},controller-uid,\"system:serviceaccounts,system:serviceaccounts:pomona-system\"\n"
            ),
        )
        .unwrap();

        let kubeconfig = d.join("admin.kubeconfig");
        let controller_kubeconfig = d.join("controller.kubeconfig");
        let ca_pem = ca.pem();
        let launch = |d: &Path, bin: &Path| {
            let port = free_port();
            let url = format!("https://127.0.0.1:{port}");
            write_kubeconfig(&kubeconfig, &url, &ca_pem, ADMIN_TOKEN);
            write_kubeconfig(&controller_kubeconfig, &url, &ca_pem, CONTROLLER_TOKEN);
            (start_apiserver(bin, d, &etcd_url, port), url)
        };
        let (apiserver, url) = launch(d, &bin);
        let mut server = Self {
            url,
            kubeconfig: kubeconfig.clone(),
            controller_kubeconfig: controller_kubeconfig.clone(),
            dir,
            bin,
            etcd_url: etcd_url.clone(),
            apiserver,
            _etcd: etcd,
        };
        server._etcd.assert_running();
        // The port is free when chosen, but another process may take it before the API server
        // binds it: then it exits saying so, and starts again on another.
        for attempt in 1.. {
            match server.wait_ready().await {
                Ok(()) => break,
                Err(why) if why.contains("address already in use") && attempt < 3 => {
                    eprintln!("kube-apiserver lost its port to another process; starting again");
                    let (apiserver, url) = launch(server.dir.path(), &server.bin);
                    (server.apiserver, server.url) = (apiserver, url);
                }
                Err(why) => panic!("{why}"),
            }
        }
        server
    }

    /// Stops the API server (etcd keeps its data): clients see connections refused.
    pub fn stop_apiserver(&mut self) {
        let _ = self.apiserver.child.kill();
        let _ = self.apiserver.child.wait();
    }

    /// Starts the API server again on the port its kubeconfigs name, and waits until it is ready.
    pub async fn restart_apiserver(&mut self) {
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the API server URL ends in its port");
        self.apiserver = start_apiserver(&self.bin, self.dir.path(), &self.etcd_url, port);
        if let Err(why) = self.wait_ready().await {
            panic!("{why}");
        }
    }

    /// Waits for `/readyz`; Err with the API server's exit when it stops instead.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            self._etcd.assert_running();
            if let Some(why) = self.apiserver.exited() {
                return Err(why);
            }
            let out = Command::new(self.bin.join("kubectl"))
                .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
                .args(["get", "--raw", "/readyz"])
                .output()
                .unwrap();
            if out.status.success() {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after 90 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Waits until the API server serves every CRD named; panics after 60 s naming those that
    /// are not Established. Polls rather than `kubectl wait`, which fails at once instead of
    /// waiting when a CRD just created has no conditions yet.
    pub fn wait_established(&self, crds: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut waiting = crds.to_vec();
        loop {
            waiting.retain(|name| {
                let (_, out, _) = self.kubectl_result(
                    &[
                        "get",
                        "crd",
                        name,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
                    ],
                    None,
                );
                out.trim() != "True"
            });
            if waiting.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "CRDs not Established after 60 s: {waiting:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs kubectl as the admin; returns stdout, panics with stderr on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl_result(args, None);
        assert!(ok, "kubectl {args:?} failed: {err}");
        out
    }

    /// Runs kubectl with `stdin`; returns (success, stdout, stderr).
    pub fn kubectl_result(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        use std::io::Write as _;
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// `kubectl apply -f -` of YAML text, as the admin.
    pub fn apply(&self, yaml: &str) {
        let (ok, out, err) = self.kubectl_result(&["apply", "-f", "-"], Some(yaml));
        assert!(ok, "kubectl apply failed: {err}\n{out}");
    }
}

fn write_kubeconfig(path: &Path, url: &str, ca_pem: &str, token: &str) {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    std::fs::write(
        path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster: {{server: \"{url}\", certificate-authority-data: {ca}}}
users:
- name: user
  user: {{token: {token}}}
contexts:
- name: envtest
  context: {{cluster: envtest, user: user}}
current-context: envtest
"
        ),
    )
    .unwrap();
}

/// The CRDs deploy/ installs.
pub const POMONA_CRDS: [&str; 5] = [
    "profiles.mdm.pomona.dev",
    "devicegroups.mdm.pomona.dev",
    "restrictions.mdm.pomona.dev",
    "devicelabels.mdm.pomona.dev",
    "deviceactions.mdm.pomona.dev",
];

/// The repository's deploy/ manifests (CRDs, RBAC, the controller's namespace) applied, the
/// CRDs established, and `namespaces` created.
pub fn install(api: &ApiServer, namespaces: &[&str]) {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    api.kubectl(&["apply", "-k", &deploy.display().to_string()]);
    api.wait_established(&POMONA_CRDS);
    for namespace in namespaces {
        api.kubectl(&["create", "namespace", namespace]);
    }
}

impl ApiServer {
    /// One object as JSON, or None when it does not exist.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<serde_json::Value> {
        let (ok, out, err) =
            self.kubectl_result(&["get", kind, name, "-n", namespace, "-o", "json"], None);
        if !ok {
            assert!(err.contains("NotFound"), "kubectl get {kind} {name}: {err}");
            return None;
        }
        Some(serde_json::from_str(&out).unwrap())
    }

    /// The events.k8s.io events about one object, oldest first.
    pub fn events_about(&self, namespace: &str, name: &str) -> Vec<serde_json::Value> {
        let out = self.kubectl(&["get", "events.events.k8s.io", "-n", namespace, "-o", "json"]);
        let all: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut events: Vec<serde_json::Value> = all["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["regarding"]["name"] == name)
            .collect();
        events.sort_by_key(|e| e["eventTime"].as_str().unwrap_or_default().to_string());
        events
    }
}

/// A condition of an object's status (`Null` when absent).
pub fn condition<'a>(object: &'a serde_json::Value, type_: &str) -> &'a serde_json::Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&serde_json::Value::Null)
}

/// How Flux judges `object` with the health-check expressions of deploy/flux/mdm-policies.yaml:
/// `Current`, `Failed`, `InProgress` or `Unknown: …`, from tests/flux-health (cel-go with Flux's
/// options and order of evaluation; built by scripts/test-deps).
pub fn flux_health(object: &serde_json::Value) -> String {
    use std::io::Write;
    let kustomization = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/flux/mdm-policies.yaml"),
    )
    .unwrap();
    let kustomization: serde_json::Value = serde_saphyr::from_str(&kustomization).unwrap();
    let exprs = &kustomization["spec"]["healthCheckExprs"][0];
    let tool = super::tool_path(
        "POMONA_FLUX_HEALTH",
        Path::new(".cache/pomona/tools/flux-health"),
    );
    let mut child = Command::new(&tool)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "tests/flux-health is missing at {} ({e}): run `scripts/test-deps` (it builds it with Go) \
                 or set POMONA_FLUX_HEALTH",
                tool.display()
            )
        });
    let input = serde_json::json!({"exprs": exprs, "object": object});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "flux-health failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}
