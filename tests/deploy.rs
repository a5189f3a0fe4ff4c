//! What operators install, checked for real: deploy/ and the Helm chart (charts/pomona) are
//! accepted by a real kube-apiserver in a server-side dry run (`helm lint` too), the chart's CRDs
//! and RBAC are the repository's, pods start without the optional push Secret (the server
//! binary run with the Deployment's push settings), the Argo CD health script gives each of
//! its test cases' answers under Lua 5.1 (what Argo CD's gopher-lua speaks), and the Grafana
//! dashboard names only metrics a running server exposes on /metrics.
//!
//! helm and lua5.1 come from scripts/test-deps (helm built once from Go modules into
//! ~/.cache/pomona/tools/, or POMONA_HELM); a missing tool fails with the command to install it.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::kube::ApiServer;

/// Must match `helm_version` in scripts/test-deps.
const HELM_VERSION: &str = "v3.22.1";
const KINDS: [&str; 5] = [
    "DeviceGroup",
    "Profile",
    "Restrictions",
    "DeviceLabels",
    "DeviceAction",
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The CRDs of crds/, by kind.
fn crds() -> BTreeMap<String, Value> {
    let mut crds = BTreeMap::new();
    for entry in std::fs::read_dir(repo("crds")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".mdm.pomona.dev.yaml") {
            let crd = yaml(&format!("crds/{name}"));
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
            crds.insert(kind, crd);
        }
    }
    assert_eq!(
        crds.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        KINDS.into_iter().collect(),
        "the kinds of crds/"
    );
    crds
}

/// helm: $POMONA_HELM, else where scripts/test-deps builds it.
fn helm() -> PathBuf {
    let path = support::tool_path(
        "POMONA_HELM",
        &Path::new(".cache/pomona/tools").join(format!("helm-{HELM_VERSION}/helm")),
    );
    assert!(
        path.is_file(),
        "helm is missing at {}: run `scripts/test-deps` (it runs `GOBIN=~/.cache/pomona/tools/helm-{HELM_VERSION} \
         go install helm.sh/helm/v3/cmd/helm@{HELM_VERSION}`; needs Go) or set POMONA_HELM",
        path.display()
    );
    path
}

/// Installs the CRD at the path in `var` (set by scripts/test-deps, which downloads it) and
/// waits until the API server serves it.
fn install_third_party_crd(api: &ApiServer, var: &str, name: &str) {
    let path = std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through scripts/test (scripts/test-deps downloads the CRD)")
    });
    assert!(
        Path::new(&path).is_file(),
        "{var}={path} is not a file: run scripts/test-deps"
    );
    // Server-side: CloudNativePG's CRD is too large for client-side apply's annotation.
    api.kubectl(&["apply", "--server-side", "-f", &path]);
    api.wait_established(&[name]);
}

/// Runs a command; stdout on success, a panic with stderr otherwise.
fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn helm_template(namespace: &str, sets: &[&str]) -> String {
    let mut command = Command::new(helm());
    command
        .args(["template", "pomona"])
        .arg(repo("charts/pomona"))
        .args(["--namespace", namespace]);
    for set in sets {
        command.args(["--set", set]);
    }
    run(&mut command)
}

/// Server-side dry run of YAML text; the objects as the API server would store them.
fn dry_run(api: &ApiServer, yaml: &str, what: &str) -> Vec<Value> {
    let (ok, out, err) = api.kubectl_result(
        &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(yaml),
    );
    assert!(ok, "{what}: the API server refuses it: {err}");
    items(&out)
}

/// The objects of kubectl's JSON output (one object, or a List).
fn items(json: &str) -> Vec<Value> {
    let value: Value = serde_json::from_str(json).unwrap();
    match value["kind"].as_str() {
        Some("List") => value["items"].as_array().cloned().unwrap_or_default(),
        _ => vec![value],
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among the objects"))
}

fn env<'a>(deployment: &'a Value, name: &str) -> Option<&'a Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

fn volume<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no volume {name}"))
}

#[test]
fn the_chart_carries_the_repository_crds_unchanged() {
    let names = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(repo(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".mdm.pomona.dev.yaml"))
            .collect()
    };
    let (ours, chart) = (names("crds"), names("charts/pomona/crds"));
    assert_eq!(
        ours, chart,
        "charts/pomona/crds/ must hold exactly the CRDs of crds/ (cp crds/*.mdm.pomona.dev.yaml charts/pomona/crds/)"
    );
    assert_eq!(ours.len(), KINDS.len());
    for name in &ours {
        assert!(
            read(&format!("crds/{name}")) == read(&format!("charts/pomona/crds/{name}")),
            "charts/pomona/crds/{name} differs from crds/{name}: cp crds/{name} charts/pomona/crds/"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_and_the_helm_chart_are_accepted_by_a_real_api_server() {
    let chart = repo("charts/pomona").display().to_string();
    run(Command::new(helm()).args(["lint", "--strict", &chart]));

    let api = ApiServer::start().await;
    // Server-side dry runs need what namespaced objects refer to: the CRDs and namespaces.
    api.kubectl(&["apply", "-k", &repo("crds").display().to_string()]);
    let crds = crds();
    let names: Vec<&str> = crds
        .values()
        .map(|crd| crd["metadata"]["name"].as_str().unwrap())
        .collect();
    api.wait_established(&names);
    for namespace in ["pomona-system", "pomona-helm", "mdm"] {
        api.kubectl(&["create", "namespace", namespace]);
    }

    // deploy/ as documented: `kubectl apply -k deploy/`.
    let (ok, out, err) = api.kubectl_result(
        &[
            "apply",
            "--dry-run=server",
            "-o",
            "json",
            "-k",
            &repo("deploy").display().to_string(),
        ],
        None,
    );
    assert!(ok, "kubectl apply -k deploy/ refused: {err}");
    let deploy = items(&out);
    let deployment = find(&deploy, "Deployment", "pomona");
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert_eq!(
        image, "registry.example.com/pomona:0.1.0",
        "the image comes from images: in deploy/kustomization.yaml"
    );
    assert_eq!(volume(deployment, "push")["secret"]["optional"], true);
    assert_eq!(
        env(deployment, "POMONA_PUSH_OPTIONAL").unwrap()["value"],
        "true"
    );
    assert!(
        !deploy.iter().any(|o| o["kind"] == "Secret"),
        "deploy/ applies no Secret (the example with a placeholder password is not applied)"
    );

    // The exposure examples, the CloudNativePG overlay (Cluster included: the operator's CRD is
    // installed, from CloudNativePG's Go module) and the Flux Kustomization of deploy/flux.
    for example in [
        "deploy/examples/service-loadbalancer.yaml",
        "deploy/examples/ingress-passthrough.yaml",
    ] {
        dry_run(&api, &read(example), example);
    }
    install_third_party_crd(
        &api,
        "POMONA_CNPG_CLUSTER_CRD",
        "clusters.postgresql.cnpg.io",
    );
    install_third_party_crd(
        &api,
        "POMONA_FLUX_KUSTOMIZATION_CRD",
        "kustomizations.kustomize.toolkit.fluxcd.io",
    );
    let overlay = api.kubectl(&[
        "kustomize",
        &repo("examples/kube-postgres").display().to_string(),
    ]);
    let objects = dry_run(&api, &overlay, "examples/kube-postgres");
    let cluster = find(&objects, "Cluster", "pomona-db");
    assert_eq!(cluster["spec"]["instances"], 2, "{cluster:#}");
    assert_eq!(cluster["spec"]["bootstrap"]["initdb"]["owner"], "pomona");
    assert_eq!(
        env(find(&objects, "Deployment", "pomona"), "POMONA_DATABASE").unwrap()["valueFrom"]
            ["secretKeyRef"],
        serde_json::json!({"name": "pomona-db-app", "key": "uri"}),
        "the Deployment reads the Secret CloudNativePG makes for the Cluster's owner"
    );
    api.kubectl(&["create", "namespace", "flux-system"]);
    let flux = dry_run(
        &api,
        &read("deploy/flux/mdm-policies.yaml"),
        "deploy/flux/mdm-policies.yaml",
    );
    let checks = &find(&flux, "Kustomization", "mdm-policies")["spec"]["healthCheckExprs"];
    assert_eq!(
        checks[0]["apiVersion"], "mdm.pomona.dev/v1alpha1",
        "the health checks survive Flux's schema (no field pruned): {checks:#}"
    );
    assert!(checks[0]["failed"].is_string(), "{checks:#}");

    // The chart with its defaults, and with every option switched.
    let defaults = dry_run(
        &api,
        &helm_template("pomona-helm", &[]),
        "helm template (defaults)",
    );
    let deployment = find(&defaults, "Deployment", "pomona");
    assert_eq!(deployment["metadata"]["namespace"], "pomona-helm");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(volume(deployment, "push")["secret"]["optional"], true);
    assert_eq!(
        env(deployment, "POMONA_PUSH_OPTIONAL").unwrap()["value"],
        "true"
    );
    assert_eq!(
        env(deployment, "POMONA_DATABASE").unwrap()["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "pomona-database", "key": "url"})
    );
    // The chart grants the controller exactly deploy/'s rights (tests/kube.rs proves those
    // are enough).
    for (role, deploy_role) in [
        ("pomona-controller", "pomona-controller"),
        ("pomona-action-secrets", "pomona-action-secrets"),
    ] {
        assert_eq!(
            find(&defaults, "ClusterRole", role)["rules"],
            find(&deploy, "ClusterRole", deploy_role)["rules"],
            "ClusterRole {role}: the chart and deploy/rbac.yaml differ"
        );
    }
    assert_eq!(
        find(&defaults, "Role", "pomona-leader-election")["rules"],
        find(&deploy, "Role", "pomona-leader-election")["rules"]
    );

    let switched = dry_run(
        &api,
        &helm_template(
            "pomona-helm",
            &[
                "image.repository=registry.example.org/mdm/pomona",
                "image.tag=1.2.3",
                "replicas=3",
                "database.url=postgres://pomona:secret@db.example.org/pomona",
                "push.optional=false",
                "push.endpoint=sandbox",
                "ingress.enabled=true",
                "service.type=LoadBalancer",
                "service.externalTrafficPolicy=Local",
                "trustedProxies={10.0.0.0/8,192.168.0.0/16}",
                "signMessage=true",
                "watchNamespace=mdm",
                "actionSecretNamespaces={mdm}",
                "podDisruptionBudget.enabled=false",
            ],
        ),
        "helm template (options switched)",
    );
    let deployment = find(&switched, "Deployment", "pomona");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.org/mdm/pomona:1.2.3"
    );
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(volume(deployment, "push")["secret"]["optional"], false);
    assert!(env(deployment, "POMONA_PUSH_OPTIONAL").is_none());
    assert_eq!(
        env(deployment, "POMONA_DATABASE").unwrap()["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "pomona-database", "key": "url"})
    );
    assert!(find(&switched, "Secret", "pomona-database")["metadata"].is_object());
    assert_eq!(
        env(deployment, "POMONA_TRUSTED_PROXIES").unwrap()["value"],
        "10.0.0.0/8,192.168.0.0/16"
    );
    assert_eq!(env(deployment, "POMONA_NAMESPACE").unwrap()["value"], "mdm");
    assert_eq!(
        find(&switched, "Service", "pomona")["spec"]["type"],
        "LoadBalancer"
    );
    find(&switched, "Ingress", "pomona");
    assert_eq!(
        find(&switched, "RoleBinding", "pomona-action-secrets")["metadata"]["namespace"],
        "mdm"
    );
    assert!(!switched.iter().any(|o| o["kind"] == "PodDisruptionBudget"));
}

/// The server binary, run with deploy/deployment.yaml's push settings on a machine where the
/// push Secret is not mounted, starts (without pushes) and answers /healthz.
#[tokio::test]
async fn pods_start_without_the_optional_push_secret() {
    let manifest = yaml("deploy/deployment.yaml");
    let push: Vec<(String, String)> = manifest["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"].as_str().unwrap().starts_with("POMONA_PUSH_"))
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let cert = push
        .iter()
        .find(|(name, _)| name == "POMONA_PUSH_CERT")
        .map(|(_, v)| v.clone())
        .expect("the Deployment names the push certificate");
    assert!(
        !Path::new(&cert).exists(),
        "{cert} exists on this machine: the test needs it absent, as in a pod without the Secret"
    );

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let policies = data.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(data.join("server.log")).unwrap();
    let mut child = tokio::process::Command::new(support::server_binary())
        .args(["serve", "--data-dir"])
        .arg(&data)
        .arg("--policy-dir")
        .arg(&policies)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .envs(push)
        .env("POMONA_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(data.join("server.log")).unwrap_or_default();
    let ca = data.join("tls/ca.pem");
    let mut healthy = false;
    for _ in 0..1200 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "pomona exited ({status}) with the Deployment's push settings and no push Secret:\n{}",
                log()
            );
        }
        if ca.exists() {
            let client = pomona::cmdline::client(Some(&ca)).unwrap();
            if let Ok(r) = client
                .get(format!("https://localhost:{port}/healthz"))
                .send()
                .await
            {
                if r.status().is_success() {
                    healthy = true;
                    break;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(healthy, "no answer on /healthz in 30 s:\n{}", log());
    let log = log();
    assert!(
        log.contains("push certificate not found and push_optional is set"),
        "the start log says why nothing is pushed:\n{log}"
    );
    child.kill().await.unwrap();
}

/// A Lua 5.1 literal for a JSON value (Argo CD hands objects to Lua as such tables).
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for byte in s.bytes() {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(byte as char),
            // Decimal escapes keep newlines and UTF-8 bytes intact in Lua 5.1.
            _ => out.push_str(&format!("\\{byte}")),
        }
    }
    out.push('"');
    out
}

/// Runs the health script on `object` with lua5.1: (status, message).
fn health(script: &str, object: &Value) -> (String, String) {
    let program = format!(
        "obj = {}\nlocal hs = (function()\n{script}\nend)()\nio.write(tostring(hs.status), \"\\n\", tostring(hs.message))\n",
        lua_literal(object)
    );
    let mut child = Command::new("lua5.1")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("lua5.1 is missing ({e}): run `scripts/test-deps` (apt-get install lua5.1)")
        });
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(program.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "lua5.1 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.split_once('\n').expect("status and message");
    (status.to_string(), message.to_string())
}

#[test]
fn the_argo_cd_health_check_answers_every_test_case() {
    let script = read("deploy/argocd/health.lua");
    let cases = yaml("deploy/argocd/health_test.yaml");
    let cases = cases["tests"].as_array().expect("tests: a list");
    let mut seen = BTreeSet::new();
    for case in cases {
        let input = case["inputPath"].as_str().unwrap();
        let object = yaml(&format!("deploy/argocd/{input}"));
        let expected = (
            case["healthStatus"]["status"].as_str().unwrap().to_string(),
            case["healthStatus"]["message"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        assert_eq!(health(&script, &object), expected, "{input}");
        seen.insert(expected.0);
        assert!(
            KINDS.contains(&object["kind"].as_str().unwrap()),
            "{input}: not a Pomona kind"
        );
    }
    for status in ["Healthy", "Progressing", "Degraded"] {
        assert!(seen.contains(status), "no test case is {status}");
    }

    // The ConfigMap snippet carries this very script for every kind of crds/.
    let cm = yaml("deploy/argocd/argocd-cm.yaml");
    let data = cm["data"].as_object().unwrap();
    for (kind, crd) in crds() {
        let key = format!(
            "resource.customizations.health.{}_{kind}",
            crd["spec"]["group"].as_str().unwrap()
        );
        let entry = data
            .get(&key)
            .unwrap_or_else(|| panic!("deploy/argocd/argocd-cm.yaml has no {key}"));
        assert!(
            entry.as_str() == Some(script.as_str()),
            "{key} in deploy/argocd/argocd-cm.yaml is not a copy of deploy/argocd/health.lua"
        );
    }
}

/// Metric names in a PromQL expression (identifiers starting with pomona_).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("pomona_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| start + n);
        if boundary {
            names.insert(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_names_only_metrics_the_server_exposes() {
    // A server with everything that adds metrics: a push certificate (APNs stand-in), policy
    // from git, an enrolled device.
    let pki = support::apns::TestPki::new();
    let apns = support::apns::FakeApns::start(&pki).await;
    let remote = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        run(Command::new("git")
            .args(args)
            .current_dir(remote.path())
            .env("GIT_CONFIG_NOSYSTEM", "1"))
    };
    git(&["init", "-q", "-b", "main"]);
    git(&[
        "-c",
        "user.name=Policy Author",
        "-c",
        "user.email=author@example.com",
        "-c",
        "commit.gpgsign=false",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "empty policy",
    ]);
    let url = format!("file://{}", remote.path().display());
    let server = support::TestServer::start_with(|args| {
        apns.configure(&pki, args);
        args.git = Some(url);
    })
    .await;
    let _device = server.enrolled_device(0).await;
    let text = server.metrics().await;

    // Families and their types from the # TYPE lines; label names from the samples.
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap().to_string();
            let set = labels.entry(name).or_default();
            if let Some(inner) = line.split_once('{').and_then(|(_, r)| r.split_once('}')) {
                for pair in inner.0.split(',').filter(|p| !p.is_empty()) {
                    set.insert(pair.split('=').next().unwrap().to_string());
                }
            }
        }
    }
    for expected in [
        "pomona_push_certificate_not_after_seconds",
        "pomona_git_fetches_total",
        "pomona_checkins_total",
    ] {
        assert!(
            labels.contains_key(expected),
            "the scrape lacks {expected} samples:\n{text}"
        );
    }
    let exposes = |name: &str| -> bool {
        if families.contains_key(name) {
            return true;
        }
        ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .and_then(|family| families.get(family))
                .is_some_and(|kind| kind == "histogram")
        })
    };

    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/pomona-dashboard.json"))
        .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push((
                panel["title"].as_str().unwrap_or("?").to_string(),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            exprs.push((format!("variable {}", variable["name"]), query.to_string()));
        }
    }
    assert!(exprs.len() > 10, "the dashboard has queries");
    let mut used = BTreeSet::new();
    let mut unknown = Vec::new();
    for (title, expr) in &exprs {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "panel {title:?} names no pomona metric: {expr}"
        );
        for name in names {
            if !exposes(&name) {
                unknown.push(format!("{name} (panel {title:?})"));
            }
            // Labels the query groups or filters by must be on the metric's samples.
            for label in grouping_labels(expr) {
                let family = name
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count");
                let seen: BTreeSet<&String> = labels
                    .iter()
                    .filter(|(sample, _)| sample.starts_with(family))
                    .flat_map(|(_, l)| l)
                    .collect();
                let generic = ["job", "instance", "pod", "namespace"];
                if !seen.is_empty() && !generic.contains(&label.as_str()) && !seen.contains(&label)
                {
                    unknown.push(format!("label {label} of {name} (panel {title:?})"));
                }
            }
            used.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "the dashboard names what /metrics does not expose: {unknown:?}\n/metrics:\n{text}"
    );
    eprintln!("the dashboard uses {} metrics: {used:?}", used.len());
    server.stop().await;
}

/// Label names in `by (…)` clauses and `{label…}` matchers of a PromQL expression.
fn grouping_labels(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    for part in expr.split("by (").skip(1) {
        let inner = part.split(')').next().unwrap();
        labels.extend(inner.split(',').map(|l| l.trim().to_string()));
    }
    for part in expr.split('{').skip(1) {
        let inner = part.split('}').next().unwrap();
        for matcher in inner.split(',') {
            let name: String = matcher
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                labels.insert(name);
            }
        }
    }
    labels.retain(|l| l != "le" && !l.is_empty());
    labels
}
