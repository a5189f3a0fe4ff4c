//! The web console in a real headless Chromium: a Pomona server over HTTPS with a declared
//! policy and five simulated devices, and `tests/console/console.mjs` driving Debian's chromium
//! through playwright-core (installed by scripts/test-deps). The script signs in (a wrong token
//! refused, the right one accepted), watches the overview while the fleet converges and while a
//! policy change is refused and repaired, searches a device by serial, opens its page, finds
//! Erase disabled until the serial is typed, locks the device through the page, puts another in
//! Lost Mode and locates it, walks the controls by keyboard, checks each API request against
//! the OpenAPI document, and fails on any console error or failed request. This test then checks through the API that the simulated device
//! acknowledged the Lock. Screenshots go to `<target>/console-screenshots/`.

mod support;

use pomona::sim::device::SimDevice;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Keep in step with scripts/test-deps (the last release that runs on Debian 12's Node.js 18).
const PLAYWRIGHT_VERSION: &str = "1.61.1";

/// Devices by `sim::hardware` index: 0–2 iPhones, 3 an iPad, 4 a Mac.
const DEVICES: usize = 5;
const LOCKED: usize = 0;
const LOST: usize = 1;
const IPAD: usize = 3;

/// A Profile with two misspelt fields: a change the server refuses, naming both.
const BROKEN_POLICY: &str = "apiVersion: mdm.pomona.dev/v1alpha1
kind: Profile
metadata: {name: broken}
spec:
  groupz: [everyone]
  payloadz: []
";

const INSTALL_HINT: &str = "install them with `source scripts/test-deps` (as root: apt-get \
    install chromium nodejs npm, then playwright-core into ~/.cache/pomona/node), or run \
    scripts/test";

fn policy(ipad_serial: &str) -> String {
    format!(
        "apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {{name: everyone}}
spec:
  selector: {{}}
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {{name: phones}}
spec:
  selector:
    matchExpressions:
      - {{key: pomona.dev/platform, operator: In, values: [iOS]}}
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: Profile
metadata: {{name: office-wifi}}
spec:
  groups: [everyone]
  payloads:
    - payloadType: com.apple.wifi.managed
      content: {{SSID_STR: Office, AutoJoin: true}}
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: Restrictions
metadata: {{name: phone-baseline}}
spec:
  groups: [phones]
  settings:
    forceEncryptedBackup: true
---
apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceAction
metadata: {{name: restart-ipad}}
spec:
  target: {{serialNumber: {ipad_serial}}}
  action: Restart
"
    )
}

/// The first file named `name` in a directory of $PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Chromium, node and playwright-core, or a failure that names what to install.
fn browser_tools() -> (PathBuf, PathBuf, PathBuf) {
    let chromium = std::env::var_os("POMONA_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| on_path("chromium"));
    let node = on_path("node");
    let modules = support::tool_path(
        "POMONA_NODE_MODULES",
        &Path::new(".cache/pomona/node")
            .join(format!("playwright-core-{PLAYWRIGHT_VERSION}"))
            .join("node_modules"),
    );
    let mut missing = Vec::new();
    if !chromium.as_deref().is_some_and(Path::is_file) {
        missing.push("chromium (Debian package `chromium`)".to_string());
    }
    if node.is_none() {
        missing.push("node (Debian package `nodejs`)".to_string());
    }
    if !modules.join("playwright-core/package.json").is_file() {
        missing.push(format!(
            "playwright-core@{PLAYWRIGHT_VERSION} in {}",
            modules.display()
        ));
    }
    assert!(
        missing.is_empty(),
        "the web console test needs {}: {INSTALL_HINT}",
        missing.join(", ")
    );
    (chromium.unwrap(), node.unwrap(), modules)
}

/// Where screenshots are kept: `console-screenshots/` in cargo's target directory.
fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

/// Lets the devices run exchanges, as if woken, until `stop` is set; hands them back.
fn run_fleet(
    mut devices: Vec<SimDevice>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<SimDevice>> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            for device in devices.iter_mut() {
                let _ = device.exchange().await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        devices
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_shows_the_fleet_converging_searches_and_locks_a_device() {
    let (chromium, node, modules) = browser_tools();
    let policy_dir = tempfile::tempdir().unwrap();
    let ipad_serial = pomona::sim::hardware(42, IPAD).serial_number;
    std::fs::write(policy_dir.path().join("policy.yaml"), policy(&ipad_serial)).unwrap();
    let dir = policy_dir.path().to_path_buf();
    let server = TestServer::start_with(move |a| a.policy_dir = Some(dir)).await;

    let mut devices = Vec::new();
    for index in 0..DEVICES {
        devices.push(server.enrolled_device(index).await);
    }
    let locked_udid = devices[LOCKED].udid().to_string();
    let locked_serial = devices[LOCKED].hw.serial_number.clone();
    let lost_udid = devices[LOST].udid().to_string();
    let lost_at = &devices[LOST].hw.location;
    let lost_location = format!("{},{}", lost_at.latitude, lost_at.longitude);
    let broken = policy_dir.path().join("broken.yaml");
    let screenshots = screenshot_dir();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/console.mjs");
    let mut child = tokio::process::Command::new(&node)
        .arg(&script)
        .env("POMONA_CONSOLE_URL", format!("{}/ui", server.base_url))
        .env("POMONA_ADMIN_TOKEN", &server.admin_token)
        .env("POMONA_CHROMIUM", &chromium)
        .env("POMONA_NODE_MODULES", &modules)
        .env("POMONA_SCREENSHOTS", &screenshots)
        .env("POMONA_DEVICE_COUNT", DEVICES.to_string())
        .env("POMONA_DEVICE_SERIAL", &locked_serial)
        .env("POMONA_DEVICE_UDID", &locked_udid)
        .env("POMONA_LOST_UDID", &lost_udid)
        .env("POMONA_LOST_LOCATION", &lost_location)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let mut stderr = child.stderr.take().unwrap();
    let stderr_text = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    // The script says when it has seen the fleet before convergence (then the devices start),
    // and when to break and repair the policy.
    let stop = Arc::new(AtomicBool::new(false));
    let mut fleet = Some(devices);
    let mut running = None;
    let mut transcript = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let reading = async {
        while let Some(line) = lines.next_line().await.expect("script output") {
            transcript.push_str(&line);
            transcript.push('\n');
            match line.trim() {
                "fleet: start" => {
                    if let Some(devices) = fleet.take() {
                        running = Some(run_fleet(devices, stop.clone()));
                    }
                }
                "policy: break" => std::fs::write(&broken, BROKEN_POLICY).unwrap(),
                "policy: repair" => std::fs::remove_file(&broken).unwrap(),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(240), reading)
        .await
        .unwrap_or_else(|_| panic!("the console script ran for 4 minutes:\n{transcript}"));
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the console script exits")
        .expect("console script status");
    let errors = stderr_text.await.unwrap_or_default();
    println!("{transcript}{errors}");
    // Straight to stderr, past the test harness's capture: where the artefacts are, always.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "console screenshots: {}",
        screenshots.display()
    );
    assert!(
        status.success(),
        "the console script failed ({status}):\n{transcript}\n{errors}\nscreenshots: {}",
        screenshots.display()
    );

    stop.store(true, Ordering::Relaxed);
    let devices = running
        .expect("the script asked for the fleet to start")
        .await
        .unwrap();
    assert!(
        devices[LOCKED].state.locked,
        "the device locked through the console is locked"
    );
    assert!(
        devices[LOST].state.lost_mode.is_some(),
        "the device put in Lost Mode through the console is in Lost Mode"
    );
    let (code, actions) = server
        .admin_get(&format!("/api/v1/devices/{locked_udid}/actions"))
        .await;
    assert_eq!(code, 200, "{actions}");
    let list = actions["actions"].as_array().cloned().unwrap_or_default();
    let locks: Vec<_> = list.iter().filter(|a| a["action"] == "Lock").collect();
    assert_eq!(locks.len(), 1, "one Lock, from the console: {actions:#}");
    assert_eq!(locks[0]["state"], "Acknowledged", "{actions:#}");
    assert_eq!(locks[0]["source"], "api", "{actions:#}");
    assert!(
        list.iter().all(|a| a["action"] != "Erase"),
        "no Erase was started: {actions:#}"
    );
    device_list_pages_and_refusals(&server).await;
    server.stop().await;
}

/// The device list the console pages through: a group's members two at a time, in id order,
/// and filters that do not exist refused with the values that do.
async fn device_list_pages_and_refusals(server: &TestServer) {
    let mut ids: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..DEVICES {
        let cursor = after
            .as_deref()
            .map(|a| format!("&after={a}"))
            .unwrap_or_default();
        let (code, page) = server
            .admin_get(&format!(
                "/api/v1/devices?group=everyone&state=enrolled&limit=2{cursor}"
            ))
            .await;
        assert_eq!(code, 200, "{page}");
        let devices = page["devices"].as_array().cloned().unwrap_or_default();
        assert!(devices.len() <= 2, "{page}");
        ids.extend(
            devices
                .iter()
                .map(|d| d["device_id"].as_str().unwrap().to_string()),
        );
        after = page["next_after"].as_str().map(String::from);
        if after.is_none() {
            break;
        }
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "pages in id order, no device twice");
    assert_eq!(ids.len(), DEVICES, "every member, page by page: {ids:?}");
    let (code, phones) = server
        .admin_get("/api/v1/devices?group=phones&platform=macOS")
        .await;
    assert_eq!(code, 200, "{phones}");
    assert_eq!(
        phones["devices"],
        serde_json::json!([]),
        "no Mac is a phone"
    );
    for (query, named) in [
        ("platform=Android", "macOS"),
        ("state=lost", "checked_out"),
        ("group=nobody", "nobody"),
    ] {
        let (code, refused) = server.admin_get(&format!("/api/v1/devices?{query}")).await;
        assert_eq!(code, 400, "{query}: {refused}");
        let message = refused["error"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{query}: {message}");
    }
}
