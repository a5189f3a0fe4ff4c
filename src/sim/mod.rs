//! A simulated fleet: N iPhones, iPads and Macs in one process, each with its own UDID, serial
//! number, model, OS, supervision and location, speaking the device side of the MDM protocol
//! over real HTTPS. Used by `pomona sim`, the end-to-end tests and the benchmarks (`drain.rs`
//! times the answering of queued commands; `keys.rs` makes, and can keep, the devices' keys).
//! It imports only `protocol`, `pki` (to read signed profiles and make its identity) and
//! `cmdline` (the HTTPS client and duration syntax it shares with the command-line tools), never
//! server code paths; and no module of the crate imports it (`tests/dependency_direction.rs`
//! checks both).

pub mod behaviour;
pub mod device;
pub mod drain;
pub mod identity;
pub mod keys;
pub mod wake;

use crate::cmdline::{client, parse_duration};
use anyhow::Context as _;
use behaviour::{Hardware, Location, Platform};
use device::{Endpoint, Faults, SimDevice};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Server base URL (as for the admin commands: `pomona serve` with no flags listens there).
    #[arg(long, default_value = "https://localhost:8443")]
    pub server: String,
    /// Queue the --commands-per-device workload through the admin API of this replica instead
    /// of --server (replicas sharing one database: queued on one, delivered by another).
    /// Enrollment tokens still come from the replica each device enrolls with.
    #[arg(long, value_name = "URL")]
    pub admin_server: Option<String>,
    /// With --drain-workers: further replicas of the same server, on the same database and data
    /// directory; devices are spread round-robin over --server and these, each enrolling and
    /// exchanging with its own. Repeatable.
    #[arg(long = "also-server", value_name = "URL")]
    pub also_servers: Vec<String>,
    /// Number of simulated devices.
    #[arg(long, default_value_t = 10)]
    pub devices: usize,
    /// PEM CA certificate to trust for the server (default: pomona-data/tls/ca.pem when present).
    #[arg(long)]
    pub server_ca: Option<PathBuf>,
    /// Admin token file: devices use it to obtain one-time enrollment tokens, and to queue
    /// the --commands-per-device workload (the same default as the admin commands).
    #[arg(long, default_value = "pomona-data/admin-token")]
    pub admin_token_file: Option<PathBuf>,
    /// Seed for device identities and fault injection (same seed, same fleet).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run for this long (e.g. 30s, 5m); default: until the workload is done.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Pause between a device's exchanges with the server.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub poll_interval: Duration,
    /// Commands each device queues for itself through the admin API and then answers.
    #[arg(long, default_value_t = 0)]
    pub commands_per_device: usize,
    /// Probability that a device answers a command NotNow.
    #[arg(long, default_value_t = 0.0)]
    pub not_now_rate: f64,
    /// Probability that a device answers a command Error.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Send check-ins to the connect URL too (devices whose profile has no CheckInURL).
    #[arg(long)]
    pub one_url: bool,
    /// Do not present the identity in the TLS handshake, as behind a TLS-terminating proxy
    /// (needs a server started with --sign-message, so devices sign each message instead).
    #[arg(long)]
    pub no_tls_client_certificate: bool,
    /// Benchmark mode: every device enrolls and queues its --commands-per-device
    /// DeviceInformation commands first (not timed); then this many workers answer them all, one
    /// device exchange after another, as fast as the server answers. The summary times the drain.
    #[arg(long)]
    pub drain_workers: Option<usize>,
    /// With --drain-workers: report the CPU time per command of this process and its direct
    /// children (the server; a PostgreSQL postmaster with its backends). Repeatable; Linux only.
    #[arg(long = "cpu-of", value_name = "PID")]
    pub cpu_of: Vec<u32>,
    /// Keep the devices' RSA keys in this directory and reuse them in later runs: making 1,000
    /// keys takes a minute or two on a small machine. Test keys only; never for real devices.
    #[arg(long, value_name = "DIR")]
    pub key_pool: Option<PathBuf>,
}

impl SimArgs {
    /// Where the workload's commands are queued: --admin-server, else --server.
    pub fn admin_url(&self) -> &str {
        self.admin_server.as_deref().unwrap_or(&self.server)
    }
}

/// A UUID-formatted string from the given generator (deterministic per seed).
pub fn uuid_from(rng: &mut fastrand::Rng) -> String {
    let bytes: [u8; 16] = std::array::from_fn(|_| rng.u8(..));
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
        .to_uppercase()
}

/// The hardware of device `index` in a fleet with this seed.
pub fn hardware(seed: u64, index: usize) -> Hardware {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
    let udid = uuid_from(&mut rng);
    const SERIAL: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789";
    let serial_number: String = (0..12)
        .map(|_| SERIAL[rng.usize(..SERIAL.len())] as char)
        .collect();
    let (platform, model, model_name, os_version, build_version) = match index % 5 {
        0..=2 => (Platform::IPhone, "iPhone15,2", "iPhone", "17.4.1", "21E236"),
        3 => (Platform::IPad, "iPad13,18", "iPad", "17.5", "21F79"),
        _ => (Platform::Mac, "Mac14,2", "MacBook Air", "14.5", "23F79"),
    };
    // Drawn after the identifiers, so adding the location kept every UDID and serial number.
    // Six decimals (about 10 cm) as a phone reports; latitudes stay where people live.
    let round = |v: f64| (v * 1e6).round() / 1e6;
    let location = Location {
        latitude: round(rng.f64() * 115.0 - 50.0),
        longitude: round(rng.f64() * 360.0 - 180.0),
    };
    Hardware {
        // Phones and tablets as a school or company deploys them (Automated Device
        // Enrollment); Macs enrolled by their users. Tests override per device.
        supervised: platform.is_ios(),
        location,
        device_name: format!("{model_name} {index}"),
        udid,
        serial_number,
        platform,
        model: model.into(),
        model_name: model_name.into(),
        product_name: model.into(),
        os_version: os_version.into(),
        build_version: build_version.into(),
    }
}

/// The fleet's result.
#[derive(Debug, Default)]
pub struct Summary {
    pub devices: usize,
    pub enrolled: usize,
    pub failed_devices: usize,
    pub requests: u64,
    pub admin_requests: u64,
    pub failed_requests: u64,
    pub acknowledged: u64,
    pub errors: u64,
    pub not_now: u64,
    pub elapsed: Duration,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// From the start until the last device finished enrolling (profile, SCEP, Authenticate,
    /// TokenUpdate); device keys are generated before the clock starts.
    pub enroll_elapsed: Duration,
    pub failures: Vec<String>,
}

impl Summary {
    pub fn requests_per_second(&self) -> f64 {
        (self.requests + self.admin_requests) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn enrollments_per_second(&self) -> f64 {
        self.enrolled as f64 / self.enroll_elapsed.as_secs_f64().max(1e-9)
    }

    pub fn line(&self) -> String {
        format!(
            "{} · {} enrollments (token, profile, SCEP, Authenticate, TokenUpdate) in {:.2}s = {:.1}/s",
            self.traffic_line(),
            self.enrolled,
            self.enroll_elapsed.as_secs_f64(),
            self.enrollments_per_second()
        )
    }

    fn traffic_line(&self) -> String {
        format!(
            "{} devices ({} enrolled, {} failed) · {} device + {} admin requests in {:.1}s = {:.0} req/s · device p50 {:.2} ms · p99 {:.2} ms · commands: {} acknowledged, {} error, {} not-now · {} failed requests",
            self.devices, self.enrolled, self.failed_devices, self.requests, self.admin_requests, self.elapsed.as_secs_f64(),
            self.requests_per_second(), self.p50_ms, self.p99_ms, self.acknowledged, self.errors, self.not_now,
            self.failed_requests
        )
    }
}

pub async fn run_cli(args: SimArgs) -> anyhow::Result<Summary> {
    if !(0.0..=1.0).contains(&args.not_now_rate) || !(0.0..=1.0).contains(&args.error_rate) {
        anyhow::bail!("--not-now-rate and --error-rate must be between 0 and 1");
    }
    let default_ca = PathBuf::from("pomona-data/tls/ca.pem");
    let ca = args
        .server_ca
        .clone()
        .or_else(|| default_ca.exists().then_some(default_ca));
    let admin_token = match &args.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| {
                    format!(
                        "reading admin token file {} (start `pomona serve` in this directory \
                         first, or pass --admin-token-file)",
                        path.display()
                    )
                })?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let Some(admin_token_value) = admin_token.clone() else {
        anyhow::bail!(
            "--admin-token-file is needed: each simulated device obtains a one-time enrollment \
             token through the admin API, downloads its enrollment profile and enrolls by SCEP"
        );
    };
    let server_ca_pem = match &ca {
        Some(path) => Some(
            std::fs::read(path).with_context(|| format!("reading server CA {}", path.display()))?,
        ),
        None => None,
    };
    let client = client(ca.as_deref())?;
    // One endpoint (and so, for signing devices, one shared HTTP/2 connection) per replica.
    let endpoints: Vec<Arc<Endpoint>> = std::iter::once(&args.server)
        .chain(&args.also_servers)
        .map(|server| {
            let mut endpoint = Endpoint::new(client.clone(), server, args.one_url)
                .enrolling_with(identity::ProfileSource::AdminToken(
                    admin_token_value.clone(),
                ))
                .trusting(server_ca_pem.clone());
            endpoint.tls_client_certificates = !args.no_tls_client_certificate;
            Arc::new(endpoint)
        })
        .collect();
    eprintln!(
        "sim: {} devices against {}{}",
        args.devices,
        std::iter::once(&args.server)
            .chain(&args.also_servers)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" and "),
        args.admin_server
            .as_ref()
            .map(|a| format!(", commands queued through {a}"))
            .unwrap_or_default()
    );
    if let Some(workers) = args.drain_workers {
        let drained = drain::run(&args, workers, &endpoints, admin_token_value).await?;
        return Ok(Summary {
            devices: drained.devices,
            failed_devices: drained.failures.len(),
            failures: drained.failures,
            ..Summary::default()
        });
    }
    anyhow::ensure!(
        args.also_servers.is_empty(),
        "--also-server needs --drain-workers (only the drain spreads devices over replicas)"
    );
    let endpoint = endpoints[0].clone();
    let printer = {
        let endpoint = endpoint.clone();
        let total = args.devices;
        tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let p = &endpoint.progress;
                eprintln!(
                    "sim: {:>5.0}s · {}/{} enrolled · {} requests · {} commands answered · {} failed requests",
                    started.elapsed().as_secs_f64(),
                    p.enrolled.load(Relaxed),
                    total,
                    p.requests.load(Relaxed),
                    p.answered.load(Relaxed),
                    p.failed_requests.load(Relaxed)
                );
            }
        })
    };
    let summary = run_fleet(&args, endpoint, admin_token).await;
    printer.abort();
    println!("sim: {}", summary.line());
    for failure in summary.failures.iter().take(10) {
        eprintln!("sim: failure: {failure}");
    }
    Ok(summary)
}

/// Runs the fleet described by `args` and returns its summary.
pub async fn run_fleet(
    args: &SimArgs,
    endpoint: Arc<Endpoint>,
    admin_token: Option<String>,
) -> Summary {
    let count = args.devices;
    let pool = args.key_pool.clone();
    let mut keys = tokio::task::spawn_blocking(move || keys::device_keys(count, pool.as_deref()))
        .await
        .unwrap_or_default();
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let faults = Faults {
        not_now_rate: args.not_now_rate,
        error_rate: args.error_rate,
    };
    let mut tasks = Vec::with_capacity(args.devices);
    for index in 0..args.devices {
        let hw = hardware(args.seed, index);
        let mut device = SimDevice::new(
            hw,
            endpoint.clone(),
            faults,
            args.seed ^ (index as u64) << 1,
        );
        device.pregenerated_key = keys.pop();
        let admin = admin_token
            .clone()
            .map(|t| (t, args.admin_url().to_string(), endpoint.client.clone()));
        let per_device = args.commands_per_device;
        let poll = args.poll_interval;
        tasks.push(tokio::spawn(async move {
            let outcome = drive(&mut device, admin, per_device, poll, deadline).await;
            (device, outcome)
        }));
    }
    let mut summary = Summary {
        devices: args.devices,
        ..Summary::default()
    };
    let mut latencies = Vec::new();
    for task in tasks {
        let (device, outcome) = match task.await {
            Ok(done) => done,
            Err(e) => {
                summary.failed_devices += 1;
                summary.failures.push(format!("device task panicked: {e}"));
                continue;
            }
        };
        let stats = &device.stats;
        summary.requests += stats.requests;
        summary.admin_requests += stats.admin_requests;
        summary.failed_requests += stats.failed_requests;
        summary.acknowledged += stats.acknowledged;
        summary.errors += stats.errors;
        summary.not_now += stats.not_now;
        latencies.extend_from_slice(&stats.latencies_us);
        match outcome {
            Ok((enrolled, enrolled_at)) => {
                summary.enrolled += usize::from(enrolled);
                summary.enroll_elapsed = summary
                    .enroll_elapsed
                    .max(enrolled_at.saturating_duration_since(started));
            }
            Err(e) => {
                summary.failed_devices += 1;
                summary.failures.push(format!("{}: {e}", device.udid()));
            }
        }
    }
    summary.elapsed = started.elapsed();
    latencies.sort_unstable();
    summary.p50_ms = percentile(&latencies, 0.50);
    summary.p99_ms = percentile(&latencies, 0.99);
    summary
}

fn percentile(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let index = ((sorted_us.len() as f64 - 1.0) * q).round() as usize;
    sorted_us[index] as f64 / 1000.0
}

/// The workload commands, cycled per device.
fn workload_command(i: usize) -> serde_json::Value {
    match i % 4 {
        0 => {
            serde_json::json!({"type": "DeviceInformation", "queries": ["OSVersion", "SerialNumber", "Model", "DeviceName"]})
        }
        1 => serde_json::json!({"type": "ProfileList"}),
        2 => serde_json::json!({"type": "SecurityInfo"}),
        _ => serde_json::json!({"type": "InstalledApplicationList"}),
    }
}

/// One device's life: enroll, queue its workload, then exchange until done or the deadline.
/// Returns whether it enrolled.
async fn drive(
    device: &mut SimDevice,
    admin: Option<(String, String, reqwest::Client)>,
    commands: usize,
    poll: Duration,
    deadline: Option<Instant>,
) -> anyhow::Result<(bool, Instant)> {
    device.enroll().await.context("enrolling")?;
    let enrolled_at = Instant::now();
    if let Some((token, server, client)) = &admin {
        for i in 0..commands {
            let url = format!(
                "{}/api/v1/devices/{}/commands",
                server.trim_end_matches('/'),
                device.udid()
            );
            let response = client
                .post(&url)
                .bearer_auth(token)
                .json(&workload_command(i))
                .send()
                .await?;
            device.stats.admin_requests += 1;
            if !response.status().is_success() {
                anyhow::bail!(
                    "queueing a command: HTTP {}: {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                );
            }
        }
    }
    loop {
        match device.exchange().await {
            Ok(_) if device.is_erased() => return Ok((true, enrolled_at)),
            Ok(_) => {}
            Err(device::SimError::Erased) => return Ok((true, enrolled_at)),
            // A failed exchange is retried at the next poll, like a device would.
            Err(e) => tracing::debug!(device = device.udid(), error = %e, "exchange failed"),
        }
        let answered = (device.stats.acknowledged + device.stats.errors) as usize;
        let workload_done = commands > 0 && answered >= commands;
        match deadline {
            Some(deadline) if Instant::now() >= deadline => break,
            None if workload_done || commands == 0 => break,
            _ => {}
        }
        device.jittered_sleep(poll).await;
    }
    if let Some(failure) = &device.stats.last_failure {
        if device.stats.failed_requests > 0
            && commands > 0
            && ((device.stats.acknowledged + device.stats.errors) as usize) < commands
        {
            anyhow::bail!("workload unfinished; last failure: {failure}");
        }
    }
    Ok((true, enrolled_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleets_are_reproducible_from_the_seed() {
        assert_eq!(hardware(7, 3).udid, hardware(7, 3).udid);
        assert_ne!(hardware(7, 3).udid, hardware(7, 4).udid);
        assert_ne!(hardware(7, 3).udid, hardware(8, 3).udid);
        assert_eq!(hardware(1, 4).platform, Platform::Mac);
        assert_eq!(hardware(7, 3).location, hardware(7, 3).location);
        assert_ne!(hardware(7, 3).location, hardware(7, 4).location);
    }

    /// The README's and examples' DeviceAction walk-through targets this Mac of the default
    /// fleet (`pomona sim`, seed 1, the fifth device): keep them in step.
    #[test]
    fn the_walk_through_mac_is_the_fifth_device_of_the_default_fleet() {
        let mac = hardware(1, 4);
        assert_eq!(mac.platform, Platform::Mac);
        assert_eq!(mac.serial_number, "K1MC8N0U09KA");
    }

    #[test]
    fn phones_and_tablets_are_supervised_and_macs_are_not_by_default() {
        let supervised: Vec<bool> = (0..5).map(|i| hardware(1, i).supervised).collect();
        assert_eq!(supervised, [true, true, true, true, false]);
    }

    #[test]
    fn device_locations_are_on_the_map() {
        for i in 0..50 {
            let l = hardware(3, i).location;
            assert!((-90.0..=90.0).contains(&l.latitude), "{l:?}");
            assert!((-180.0..=180.0).contains(&l.longitude), "{l:?}");
        }
    }
}
