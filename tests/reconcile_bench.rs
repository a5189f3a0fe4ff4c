//! Reconciler benchmark (timings belong here, never in tests). Ignored by default; run with
//!
//! ```sh
//! cargo test --release --test reconcile_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! `a_fleet_converges_on_one_profile_change` runs the release `pomona serve` binary as a process
//! of its own (SQLite; `POMONA_BENCH_DATABASE=postgres://…` runs it on that PostgreSQL database
//! instead, an empty one), and in this process the local APNs server and POMONA_BENCH_DEVICES
//! simulated devices (default 10,000) that enroll through SCEP and then only answer pushes. The
//! policy directory declares one profile for every device from the start, so the fleet is first
//! inventoried and given the profile, as a fleet in service would be. Then the profile's content
//! changes, and the benchmark measures the time from the new snapshot being in force to every
//! device verified with the new content (installed, then confirmed by ProfileList), the device
//! requests per second over that time, the CPU time of the server and of the fleet, and both
//! processes' peak RSS.
//!
//! `POMONA_BENCH_PROFILES` declares that many profiles for every device (default 1), and each
//! change gives all of them new content. After the first rollout the benchmark waits (up to two
//! minutes) for devices to close their idle connections and prints the server's resident memory
//! per enrolled device beyond what it held at start.
//!
//! `POMONA_BENCH_ROLLOUT_MAX_DEVICES` sets the server's rollout pacing (default 5,000 devices
//! with installs outstanding at once; 0 = no limit). `POMONA_BENCH_PUSH_COALESCE` sets its push
//! coalescing window (default `1s`, the product's default). `POMONA_BENCH_DEVICE_IDLE` sets how
//! many seconds a simulated device keeps its idle connection open (default 90, reqwest's; 5
//! above 10,000 devices, since the sandbox allows 20,000 open files per process and a fleet
//! holding every connection would exceed it on both sides). On SQLite it prints the database's
//! size after each change; `POMONA_BENCH_KEEP_DATA=1` keeps the server's data directory.
//!
//! `planning_one_change_costs_what_it_touches` times the driver's fan-out (the group membership
//! index) and the pure planner over a synthetic fleet, for a change that touches every device
//! and for one that touches a hundredth of them.

mod support;

use pomona::policy::model::Platform;
use pomona::policy::selector::DeviceAttributes;
use pomona::reconcile::membership::Membership;
use pomona::sim::wake::answer_pushes;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::apns::{FakeApns, TestPki};
use support::{cpu_seconds, peak_rss_of, TestServer};

fn fleet_size() -> usize {
    std::env::var("POMONA_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// How long simulated devices keep idle connections (`POMONA_BENCH_DEVICE_IDLE`, seconds).
fn device_idle_timeout(devices: usize) -> Option<Duration> {
    match std::env::var("POMONA_BENCH_DEVICE_IDLE") {
        Ok(seconds) => Some(Duration::from_secs(
            seconds
                .parse()
                .expect("POMONA_BENCH_DEVICE_IDLE is a number of seconds"),
        )),
        Err(_) if devices > 10_000 => Some(Duration::from_secs(5)),
        Err(_) => None,
    }
}

/// Device requests served so far (check-ins and command exchanges), from the metrics.
fn device_requests(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("pomona_http_requests_total{endpoint=\"/mdm"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn reconciles(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("pomona_reconciles_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// A latency histogram of the server's: (upper bound in seconds, cumulative count).
fn latency_buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|l| {
            let (bound, count) = l.split_once("\"} ")?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, count.parse().ok()?))
        })
        .collect()
}

/// The bucket bound under which a `q` share of the requests between two scrapes fell.
fn latency_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|(bound, n)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == bound)
                .map_or(0.0, |(_, n)| *n);
            (*bound, n - earlier)
        })
        .collect();
    let total = counts.last().map_or(0.0, |(_, n)| *n);
    counts
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or(f64::INFINITY, |(bound, _)| *bound)
}

fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

const GROUP: &str = "apiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {name: everyone}
spec: {selector: {}}
";

/// Profile `wifi-{index}` for everyone, a Wi-Fi payload for network `ssid`.
fn profile(index: usize, ssid: &str) -> String {
    format!(
        "apiVersion: mdm.pomona.dev/v1alpha1
kind: Profile
metadata: {{name: wifi-{index}}}
spec:
  groups: [everyone]
  payloads:
    - payloadType: com.apple.wifi.managed
      content: {{SSID_STR: {ssid}-{index}, AutoJoin: true}}
"
    )
}

/// How many profiles every device carries (`POMONA_BENCH_PROFILES`, default 1); a change gives
/// each of them new content.
fn profiles_per_device() -> usize {
    std::env::var("POMONA_BENCH_PROFILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Writes the fleet's profiles, each with content for network `ssid`.
fn write_profiles(dir: &std::path::Path, profiles: usize, ssid: &str) {
    for index in 0..profiles {
        std::fs::write(dir.join(format!("wifi-{index}.yaml")), profile(index, ssid)).unwrap();
    }
}

/// The server's resident memory now (VmRSS), in bytes.
fn rss_bytes(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/PID/status")
        * 1024
}

/// Connections the server holds open, from /proc (sockets among its file descriptors).
fn open_sockets(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(Result::ok)
                .filter(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Waits until each of the `profiles` profiles `Profile/wifi-*` counts every device verified
/// with its declared content; returns when that happened.
/// With `timeline`, prints once a second how far each stage got (reconciles, pushes, device
/// requests, verified devices), to show which stage holds the others back.
async fn all_verified(
    server: &TestServer,
    devices: usize,
    profiles: usize,
    what: &str,
    timeline: Option<&FakeApns>,
) -> Instant {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(900);
    let mut half_reported = false;
    let mut next_line = started;
    let counters = |metrics: &str| (reconciles(metrics), device_requests(metrics));
    let mut origin = None;
    loop {
        let (code, status) = server.admin_get("/api/v1/status").await;
        assert_eq!(code, 200, "{status}");
        let wifi: Vec<&serde_json::Value> = status["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["profile"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("Profile/wifi-"))
            })
            .collect();
        // Devices verified with every profile (at most the least verified profile's count).
        let verified = if wifi.len() == profiles {
            wifi.iter()
                .map(|p| p["verified"].as_u64().unwrap_or(0) as usize)
                .min()
                .unwrap_or(0)
        } else {
            0
        };
        let w = serde_json::Value::Array(wifi.into_iter().cloned().collect());
        if let Some(apns) = timeline.filter(|_| Instant::now() >= next_line) {
            next_line += Duration::from_secs(1);
            let metrics = server.metrics().await;
            let now = (counters(&metrics), apns.pushes().len());
            let ((r0, q0), p0) = *origin.get_or_insert(now);
            let ((r, q), p) = now;
            eprintln!(
                "{what} t={:5.1}s reconciles {:6.0} pushes {:6} requests {:6.0} verified {verified:6} \
                 rollout waiting {} installing {}",
                started.elapsed().as_secs_f64(),
                r - r0,
                p - p0,
                q - q0,
                gauge(&metrics, "pomona_rollout_waiting_devices"),
                gauge(&metrics, "pomona_rollout_installing_devices"),
            );
        }
        if verified == devices {
            return Instant::now();
        }
        if !half_reported && verified * 2 >= devices {
            half_reported = true;
            eprintln!(
                "{what}: half verified after {:.2}s",
                started.elapsed().as_secs_f64()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not converged after 900 s: {w}"
        );
        // Each status read counts the whole fleet's profiles: a dashboard's pace, not a busy
        // loop competing with the fleet for the cores (200 ms per 10,000 devices).
        let polls_apart = 200 * devices.div_ceil(10_000).max(1) as u64;
        tokio::time::sleep(Duration::from_millis(polls_apart)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn a_fleet_converges_on_one_profile_change() {
    let devices = fleet_size();
    let profiles = profiles_per_device();
    let pki = TestPki::new();
    let apns = FakeApns::start(&pki).await;
    // The fleet's standing policy: `profiles` Wi-Fi profiles for everyone.
    let policy = tempfile::tempdir().unwrap();
    std::fs::write(policy.path().join("group.yaml"), GROUP).unwrap();
    write_profiles(policy.path(), profiles, "Office");
    let data = tempfile::tempdir().unwrap();
    let mut flags = apns.serve_flags(&pki);
    for (flag, value) in [
        ("--policy-dir", policy.path().display().to_string()),
        // Production push settings.
        (
            "--push-coalesce",
            std::env::var("POMONA_BENCH_PUSH_COALESCE").unwrap_or_else(|_| "1s".into()),
        ),
        ("--push-poll-interval", "1s".into()),
        ("--push-backoff", "1m,5m,30m,2h,24h".into()),
    ] {
        flags.extend([flag.to_string(), value]);
    }
    if let Ok(database) = std::env::var("POMONA_BENCH_DATABASE") {
        flags.extend(["--database".to_string(), database]);
    }
    // Rollout pacing (`--rollout-max-devices`, default 5,000 devices installing at once).
    if let Ok(limit) = std::env::var("POMONA_BENCH_ROLLOUT_MAX_DEVICES") {
        flags.extend(["--rollout-max-devices".to_string(), limit]);
    }
    // The server is the release `pomona` binary in a process of its own (its own CPU account,
    // and its own open-file limit: 10,000 devices hold 10,000 connections on each side).
    let server = TestServer::start_process(data.path().to_path_buf(), &flags, "warn").await;
    let server_pid = server
        .process
        .as_ref()
        .and_then(|p| p.id())
        .expect("server process")
        .to_string();
    let base_rss = rss_bytes(&server_pid);

    let mut endpoint = server.endpoint_config(false);
    endpoint.idle_connection_timeout = device_idle_timeout(devices);
    let endpoint = std::sync::Arc::new(endpoint);
    // A phone generates its own key; here one RSA key is shared by the simulated fleet (each
    // device still gets its own certificate through SCEP), so that 10,000 key generations
    // (~0.1 s each on these cores) do not dominate the set-up.
    let shared_key = pomona::sim::identity::generate_key(2048).expect("device key");
    let enroll_started = Instant::now();
    let mut enrolling = tokio::task::JoinSet::new();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    for index in 0..devices {
        let mut device = server.device_on(endpoint.clone(), index);
        device.pregenerated_key = Some(shared_key.clone());
        let gate = gate.clone();
        let key = shared_key.clone();
        enrolling.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            // As a real device does, try again later when the server says 503 (busy).
            let mut attempt = 1;
            while let Err(e) = device.enroll().await {
                assert!(attempt < 10, "enroll failed {attempt} times: {e}");
                attempt += 1;
                device.pregenerated_key = Some(key.clone());
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            device
        });
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut answering = Vec::with_capacity(devices);
    while let Some(device) = enrolling.join_next().await {
        let mut device = device.unwrap();
        let pushed = apns.device(device.push_token());
        let stopped = stopped.clone();
        answering.push(tokio::spawn(async move {
            answer_pushes(&mut device, pushed, stopped).await
        }));
        if answering.len() % 10_000 == 0 && answering.len() < devices {
            eprintln!(
                "enrolled {} of {devices} devices after {:.1}s",
                answering.len(),
                enroll_started.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "enrolled {devices} devices in {:.1}s",
        enroll_started.elapsed().as_secs_f64()
    );
    // A fleet in service: every device inventoried and carrying the profile.
    all_verified(&server, devices, profiles, "first rollout", None).await;
    eprintln!(
        "first rollout (inventory and install) done {:.1}s after enrolment started",
        enroll_started.elapsed().as_secs_f64()
    );
    // Memory per enrolled device beyond the server's base: once devices closed their idle
    // connections (POMONA_BENCH_DEVICE_IDLE), what is left is what the server keeps per device.
    let quiet = Instant::now() + Duration::from_secs(120);
    while open_sockets(&server_pid) > 64 && Instant::now() < quiet {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rss = rss_bytes(&server_pid);
    println!(
        "reconcile: server memory with {devices} devices × {profiles} profiles: {:.0} MB at start, \
         {:.0} MB enrolled and in service with {} sockets open: {:.0} bytes per device",
        base_rss as f64 / 1e6,
        rss as f64 / 1e6,
        open_sockets(&server_pid),
        rss.saturating_sub(base_rss) as f64 / devices as f64,
    );

    // The change: new content for the profile every device carries, `POMONA_BENCH_CHANGES`
    // times in a row (default 1), so that one enrolment gives several samples: runs of one build
    // differ by seconds at 10,000 devices (BENCHMARKS.md).
    let changes = std::env::var("POMONA_BENCH_CHANGES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let mut times = Vec::with_capacity(changes);
    for change in 1..=changes {
        let (_, before) = server.admin_get("/api/v1/status").await;
        let old_revision = before["policy"]["revision"].clone();
        let requests_before = device_requests(&server.metrics().await);
        const REQUESTS: &str = "pomona_device_request_duration_seconds";
        const RECONCILES: &str = "pomona_reconcile_duration_seconds";
        let metrics_before = server.metrics().await;
        let latency_before = [
            latency_buckets(&metrics_before, REQUESTS),
            latency_buckets(&metrics_before, RECONCILES),
        ];
        let reconciles_before = reconciles(&server.metrics().await);
        let pushes_before = apns.pushes().len();
        let written = Instant::now();
        write_profiles(policy.path(), profiles, &format!("Guest-{change}"));
        // The directory is polled every 2 s: the clock that matters starts when the new snapshot
        // is in force.
        let applied = loop {
            let (_, status) = server.admin_get("/api/v1/status").await;
            if status["policy"]["revision"] != old_revision {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let cpu_before = (cpu_seconds(&server_pid), cpu_seconds("self"));
        let converged = all_verified(
            &server,
            devices,
            profiles,
            &format!("change {change}"),
            Some(&apns),
        )
        .await
            - applied;
        let cpu = (
            cpu_seconds(&server_pid) - cpu_before.0,
            cpu_seconds("self") - cpu_before.1,
        );
        let metrics = server.metrics().await;
        let requests = device_requests(&metrics) - requests_before;
        let reconciles = reconciles(&metrics) - reconciles_before;
        println!(
            "reconcile: change {change}/{changes}: {devices} devices · snapshot applied {:.1}s after the file was written · \
             all verified {:.2}s after the snapshot · {requests:.0} device requests = {:.0} req/s · \
             {reconciles:.0} reconciles · {} pushes",
            (applied - written).as_secs_f64(),
            converged.as_secs_f64(),
            requests / converged.as_secs_f64(),
            apns.pushes().len() - pushes_before,
        );
        for ((name, what), before) in [REQUESTS, RECONCILES]
            .into_iter()
            .zip(["device request", "reconcile"])
            .zip(&latency_before)
        {
            let after = latency_buckets(&metrics, name);
            println!(
                "reconcile: {what} latency at the server: p50 <= {} ms, p99 <= {} ms",
                latency_quantile(before, &after, 0.5) * 1000.0,
                latency_quantile(before, &after, 0.99) * 1000.0,
            );
        }
        println!(
            "reconcile: CPU from the snapshot to all verified: server {:.1}s ({:.2} ms/device), \
             fleet + APNs {:.1}s ({:.2} ms/device)",
            cpu.0,
            cpu.0 * 1000.0 / devices as f64,
            cpu.1,
            cpu.1 * 1000.0 / devices as f64,
        );
        println!(
            "reconcile: peak RSS: server {} · fleet of {devices} + APNs {}",
            peak_rss_of(&server_pid),
            support::peak_rss()
        );
        if std::env::var("POMONA_BENCH_DATABASE").is_err() {
            println!(
                "reconcile: SQLite database on disk (with its WAL): {:.0} MB",
                files_bytes(data.path()) as f64 / 1e6
            );
        }
        times.push(converged.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "reconcile: all verified after each of {changes} changes: {} s; median {:.2} s",
        times
            .iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        times[times.len() / 2]
    );
    stop.send(true).unwrap();
    let mut failed = 0;
    for task in answering {
        failed += task.await.unwrap().failed_exchanges;
    }
    assert_eq!(failed, 0, "no exchange failed");
    server.stop().await;
    // To look into the database afterwards (sizes per table: sqlite3's dbstat).
    // Set and not empty or 0: `POMONA_BENCH_KEEP_DATA= …` keeps nothing (it is gigabytes).
    let keep = std::env::var("POMONA_BENCH_KEEP_DATA").is_ok_and(|v| !v.is_empty() && v != "0");
    if keep {
        println!(
            "reconcile: data directory kept in {}",
            data.keep().display()
        );
    }
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn planning_one_change_costs_what_it_touches() {
    let devices = fleet_size();
    let fleet: HashMap<String, DeviceAttributes> = (0..devices)
        .map(|i| {
            let id = format!("DEVICE-{i:06}");
            let mut labels = std::collections::BTreeMap::new();
            labels.insert("team".to_string(), format!("team-{}", i % 100));
            let a = DeviceAttributes {
                device_id: id.as_str().into(),
                serial_number: Some(format!("SERIAL{i:06}").into()),
                platform: Some(Platform::Ios),
                os_version: Some("17.4".into()),
                labels,
                ..DeviceAttributes::default()
            };
            (id, a)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let policy = |everyone: &str, team: &str| {
        format!(
            "{GROUP}---\napiVersion: mdm.pomona.dev/v1alpha1
kind: DeviceGroup
metadata: {{name: team-7}}
spec: {{selector: {{matchLabels: {{team: team-7}}}}}}
---
{}---
apiVersion: mdm.pomona.dev/v1alpha1
kind: Profile
metadata: {{name: team-wifi}}
spec:
  groups: [team-7]
  payloads:
    - payloadType: com.apple.wifi.managed
      content: {{SSID_STR: {team}, AutoJoin: true}}
",
            profile(0, everyone)
        )
    };
    let load = |text: String| {
        std::fs::write(dir.path().join("p.yaml"), text).unwrap();
        pomona::policy::source::load_dir(dir.path()).expect("valid policy")
    };
    let empty = pomona::policy::snapshot::PolicySnapshot::default();
    let first = load(policy("A", "A"));
    // Everyone's wifi changes: the whole fleet is touched.
    let second = load(policy("B", "A"));
    // Only team 7's profile changes: a hundredth of the fleet.
    let team_only = load(policy("B", "C"));
    for (what, old, new) in [
        ("first profile, whole fleet", &empty, &first),
        ("changed profile, whole fleet", &first, &second),
        ("one team's profile (1 %)", &second, &team_only),
    ] {
        let mut index = Membership::rebuild(old, fleet.values());
        let started = Instant::now();
        let touched = index.apply_snapshot(old, new, fleet.values());
        let fan_out = started.elapsed();
        let started = Instant::now();
        let mut planned = 0;
        for id in &touched {
            let attributes = &fleet[id];
            let desired = new.desired_for(attributes);
            let result = pomona::reconcile::plan::plan(pomona::reconcile::plan::PlanInput {
                device_id: id,
                desired,
                managed: Default::default(),
                reported: None,
                in_flight: Vec::new(),
                finished: Vec::new(),
                now: 0,
                settings: Default::default(),
            });
            planned += result.commands.len();
        }
        let planning = started.elapsed();
        println!(
            "plan: {what}: {} of {devices} devices touched in {:.2} ms; planned {planned} commands in {:.2} ms ({:.1} µs per device)",
            touched.len(),
            fan_out.as_secs_f64() * 1000.0,
            planning.as_secs_f64() * 1000.0,
            planning.as_secs_f64() * 1e6 / touched.len().max(1) as f64,
        );
        assert!(!touched.is_empty(), "{what}: the change touches devices");
    }
}

/// Bytes of the regular files under `dir` (the server's data directory: its database and WAL).
fn files_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => files_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
