//! Test harness: a real Pomona server over HTTPS on a loopback port, with its own data directory,
//! plus helpers for simulated devices and the admin API.
#![allow(dead_code)] // Each test binary uses a different subset.

pub mod apns;
pub mod kube;

use pomona::config::ServeArgs;
use pomona::sim::behaviour::Hardware;
use pomona::sim::device::{Endpoint, Faults, SimDevice};
use pomona::sim::identity::ProfileSource;
use std::path::PathBuf;
use std::sync::Arc;

pub struct TestServer {
    pub base_url: String,
    pub data_dir: PathBuf,
    pub admin_token: String,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// A server run as a `pomona serve` process (see `start_process`).
    pub process: Option<tokio::process::Child>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server on 127.0.0.1:0 with a fresh data directory and SQLite.
    pub async fn start_with(adjust: impl FnOnce(&mut ServeArgs)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self::start_in(dir.path().to_path_buf(), adjust).await;
        server._dir = Some(dir);
        server
    }

    pub async fn start_in(data_dir: PathBuf, adjust: impl FnOnce(&mut ServeArgs)) -> Self {
        Self::start_on(data_dir, 0, adjust).await
    }

    /// Starts a server on a given loopback port (0: any), e.g. again on the port of a server
    /// that was stopped, so enrolled devices find it where their profile says.
    pub async fn start_on(
        data_dir: PathBuf,
        port: u16,
        adjust: impl FnOnce(&mut ServeArgs),
    ) -> Self {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind loopback");
        let port = listener.local_addr().unwrap().port();
        let mut args = ServeArgs {
            data_dir: Some(data_dir.clone()),
            listen: Some(format!("127.0.0.1:{port}")),
            policy_dir: None,
            ..ServeArgs::default()
        };
        adjust(&mut args);
        let config = args.resolve().expect("valid test configuration");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(pomona::serve_on(config, listener, async move {
            let _ = rx.await;
        }));
        let mut server = Self::attach(data_dir, port).await;
        server.shutdown = Some(tx);
        server.task = Some(task);
        server
    }

    /// Runs the `pomona` binary (`pomona serve --data-dir DIR --listen 127.0.0.1:PORT` and
    /// `flags`) as a process of its own, logging to `DIR/server.log`. Benchmarks use it so the
    /// server has its own CPU account and file-descriptor table, apart from the simulated fleet.
    pub async fn start_process(data_dir: PathBuf, flags: &[String], log_filter: &str) -> Self {
        let port = {
            let probe = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind loopback");
            probe.local_addr().unwrap().port()
        };
        Self::start_process_on(data_dir, port, flags, log_filter).await
    }

    /// `start_process` on a given port (a restart where enrolled devices expect it). The log
    /// is appended to, so that it tells the story of every restart.
    pub async fn start_process_on(
        data_dir: PathBuf,
        port: u16,
        flags: &[String],
        log_filter: &str,
    ) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("server.log"))
            .expect("server log");
        let child = tokio::process::Command::new(server_binary())
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(flags)
            .env("POMONA_LOG", log_filter)
            .stdout(log.try_clone().expect("server log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("pomona binary (built by cargo for integration tests)");
        let mut server = Self::attach(data_dir, port).await;
        server.process = Some(child);
        server
    }

    /// Waits for a server starting on `port` with `data_dir` to answer /readyz.
    async fn attach(data_dir: PathBuf, port: u16) -> Self {
        let base_url = format!("https://localhost:{port}");
        // The data directory is ready once the token file exists; then wait for /readyz.
        let token_path = data_dir.join("admin-token");
        let ca = data_dir.join("tls/ca.pem");
        // Up to 30 s: a loaded two-core machine starting etcd and an API server alongside.
        for _ in 0..1200 {
            if token_path.exists() && ca.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        if !ca.exists() {
            // Say why: the server's own log (it may have exited, e.g. on a taken port).
            let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "the server on port {port} did not create {} in 30 s; its log ends:\n{}",
                ca.display(),
                tail.join("\n")
            );
        }
        let client = pomona::cmdline::client(Some(&ca)).expect("client");
        for _ in 0..400 {
            if let Ok(r) = client.get(format!("{base_url}/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let admin_token = std::fs::read_to_string(&token_path)
            .expect("admin token")
            .trim()
            .to_string();
        Self {
            base_url,
            data_dir,
            admin_token,
            client,
            shutdown: None,
            task: None,
            process: None,
            _dir: None,
        }
    }

    /// An endpoint whose devices enroll like real ones: a one-time enrollment token through
    /// the admin API, the enrollment profile, SCEP, then mTLS (or Mdm-Signature).
    pub fn endpoint(&self, one_url: bool) -> Arc<Endpoint> {
        Arc::new(self.endpoint_config(one_url))
    }

    pub fn endpoint_config(&self, one_url: bool) -> Endpoint {
        let ca = std::fs::read(self.data_dir.join("tls/ca.pem")).expect("server CA");
        Endpoint::new(self.client.clone(), &self.base_url, one_url)
            .enrolling_with(ProfileSource::AdminToken(self.admin_token.clone()))
            .trusting(Some(ca))
    }

    pub fn device(&self, index: usize) -> SimDevice {
        self.device_on(self.endpoint(false), index)
    }

    /// Device `index` with its hardware changed before it enrolls, e.g. an unsupervised
    /// iPhone: `server.device_with(0, |hw| hw.supervised = false)`.
    pub fn device_with(&self, index: usize, adjust: impl FnOnce(&mut Hardware)) -> SimDevice {
        let mut device = self.device(index);
        adjust(&mut device.hw);
        device
    }

    pub fn device_on(&self, endpoint: Arc<Endpoint>, index: usize) -> SimDevice {
        SimDevice::new(
            pomona::sim::hardware(42, index),
            endpoint,
            Faults::default(),
            index as u64,
        )
    }

    pub async fn enrolled_device(&self, index: usize) -> SimDevice {
        let mut d = self.device(index);
        d.enroll().await.expect("enroll");
        d
    }

    /// Queues a command through the admin API and returns its UUID.
    pub async fn queue(&self, device: &str, body: serde_json::Value) -> String {
        let (status, json) = self
            .admin_post(&format!("/api/v1/devices/{device}/commands"), body)
            .await;
        assert_eq!(status, 201, "queueing failed: {json}");
        json["command_uuid"]
            .as_str()
            .expect("command_uuid")
            .to_string()
    }

    pub async fn admin_get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base_url))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn admin_post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// `GET /api/v1/status`, which must answer 200.
    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = self.admin_get("/api/v1/status").await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Lets every device run exchanges until `done` holds for the status; fails after 60 s
    /// with the last status.
    pub async fn converge<D: std::borrow::BorrowMut<SimDevice>>(
        &self,
        devices: &mut [D],
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            for d in devices.iter_mut() {
                let _ = d.borrow_mut().exchange().await;
            }
            let s = self.status().await;
            if done(&s) {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: did not converge: {s:#}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The enrollment profile, downloaded with the admin token.
    pub async fn admin_profile(&self) -> Vec<u8> {
        let r = self
            .client
            .get(format!("{}/enroll", self.base_url))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET /enroll as admin");
        r.bytes().await.unwrap().to_vec()
    }

    /// One profile's entry in `GET /api/v1/status` (Null when neither declared nor managed).
    pub async fn profile_status(&self, key: &str) -> serde_json::Value {
        let (code, status) = self.admin_get("/api/v1/status").await;
        assert_eq!(code, 200, "{status}");
        status["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["profile"] == key)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    /// The Prometheus text from /metrics.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The commands of a device as the admin API lists them (newest first).
    pub async fn commands(&self, device: &str) -> Vec<serde_json::Value> {
        let (status, json) = self
            .admin_get(&format!("/api/v1/devices/{device}/commands"))
            .await;
        assert_eq!(status, 200, "{json}");
        json["commands"].as_array().cloned().unwrap_or_default()
    }

    pub async fn command(&self, device: &str, uuid: &str) -> serde_json::Value {
        self.commands(device)
            .await
            .into_iter()
            .find(|c| c["command_uuid"] == uuid)
            .unwrap_or_else(|| panic!("command {uuid} not listed"))
    }

    /// PUTs a raw body to a device endpoint as `device` (its TLS client certificate, and its
    /// Mdm-Signature when its profile asks for one) and returns (status, body).
    pub async fn put_as(
        &self,
        device: &SimDevice,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let identity = device.identity.as_ref().expect("device has enrolled");
        let mut request = identity
            .tls_client
            .put(format!("{}{path}", self.base_url))
            .header("Content-Type", content_type);
        if identity.instructions.sign_message {
            request = request.header("Mdm-Signature", identity.sign(&body));
        }
        let r = request.body(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.bytes().await.unwrap().to_vec())
    }

    /// PUTs a raw body to a device endpoint with no identity and returns (status, body).
    pub async fn put_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let r = self
            .client
            .put(format!("{}{path}", self.base_url))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.bytes().await.unwrap().to_vec())
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server exited cleanly");
        }
        if let Some(mut process) = self.process.take() {
            process.kill().await.expect("stop the server process");
        }
    }
}

/// A minimal configuration profile.
pub fn profile(identifier: &str, name: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadVersion</key><integer>1</integer>
<key>PayloadIdentifier</key><string>{identifier}</string>
<key>PayloadUUID</key><string>6D1A7C44-1D2B-4C55-9F3A-{:012X}</string>
<key>PayloadDisplayName</key><string>{name}</string>
<key>PayloadContent</key><array><dict>
<key>PayloadType</key><string>com.apple.applicationaccess</string>
<key>PayloadVersion</key><integer>1</integer>
<key>PayloadIdentifier</key><string>{identifier}.restrictions</string>
<key>PayloadUUID</key><string>0B7E6F2A-4E7D-4B1C-8C0D-{:012X}</string>
<key>allowCamera</key><false/>
</dict></array>
</dict></plist>"#,
        identifier.len(),
        name.len()
    )
    .into_bytes()
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// This process's peak resident memory (`VmHWM`), for benchmark output.
pub fn peak_rss() -> String {
    peak_rss_of("self")
}

/// The peak resident memory (`VmHWM`) of process `pid` (or "self").
pub fn peak_rss_of(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// CPU time (user + system, seconds) process `pid` (or "self") has used so far, all threads.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields
        .get(11..13)
        .map(|t| t.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0 // USER_HZ
}

/// A fresh database, named after `purpose`, on the test PostgreSQL server at
/// `POMONA_TEST_POSTGRES_URL` (`scripts/test` starts one); its URL.
pub async fn fresh_postgres_database(purpose: &str) -> String {
    let url = std::env::var("POMONA_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "POMONA_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which starts a \
             throwaway PostgreSQL (apt-get install postgresql)"
        )
    });
    let admin = sqlx::PgPool::connect(&url)
        .await
        .expect("connect to PostgreSQL");
    let name = format!("{purpose}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').expect("URL has a database name");
    format!("{base}/{name}")
}

/// Where a tool the tests run is: the environment variable `var` if set, else `under_home`
/// inside $HOME (where scripts/test-deps puts it).
pub fn tool_path(var: &str, under_home: &std::path::Path) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").expect("HOME is set");
        std::path::Path::new(&home).join(under_home)
    })
}

/// The `pomona` binary server processes run: the one cargo built for the tests, or
/// `POMONA_BENCH_BIN` (benchmarks comparing two builds back to back; see BENCHMARKS.md).
pub fn server_binary() -> std::ffi::OsString {
    std::env::var_os("POMONA_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_pomona").into())
}
