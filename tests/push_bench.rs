//! Push benchmarks (timings belong here, never in tests). Ignored by default; run with
//!
//! ```sh
//! cargo test --release --test push_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! `apns_client_throughput_over_one_connection` sends pushes straight from the APNs client to
//! the local APNs server; `enqueue_to_connect_for_a_fleet` enrolls POMONA_BENCH_DEVICES
//! simulated devices (default 10,000) that never poll, queues one command for each through the
//! admin API, and measures, per device, the time from its enqueue to its connect (woken by the
//! push) and to its answered command. Both print one summary line.

mod support;

use pomona::push::certificate::PushCertificate;
use pomona::push::client::{ApnsClient, ClientSettings};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::apns::{FakeApns, TestPki};
use support::TestServer;

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn apns_client_throughput_over_one_connection() {
    let pki = TestPki::new();
    let apns = FakeApns::start(&pki).await;
    let cert = PushCertificate::from_pem_files(&pki.path("push.pem"), Some(&pki.path("push.key")))
        .unwrap();
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    let roots = rustls_pemfile::certs(&mut ca.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let client = Arc::new(
        ApnsClient::new(
            &cert,
            &ClientSettings {
                endpoint: apns.url.clone(),
                extra_roots: roots,
                concurrency: 200,
                timeout: Duration::from_secs(30),
            },
        )
        .unwrap(),
    );
    let pushes: usize = std::env::var("POMONA_BENCH_PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    // Warm up: connect once.
    client.push(&[1; 32], "warm-up").await.unwrap();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..pushes {
        let client = client.clone();
        tasks.spawn(async move {
            let token = (i as u64).to_be_bytes().repeat(4);
            client.push(&token, "bench-magic").await
        });
    }
    let mut accepted = 0;
    while let Some(done) = tasks.join_next().await {
        if done.unwrap().is_ok_and(|r| r.status == 200) {
            accepted += 1;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(accepted, pushes, "every push must be accepted");
    println!(
        "push throughput: {pushes} pushes over one HTTP/2 connection (≤200 streams in flight) in {:.2}s = {:.0} pushes/s",
        elapsed.as_secs_f64(),
        pushes as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn enqueue_to_connect_for_a_fleet() {
    let devices: usize = std::env::var("POMONA_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let pki = TestPki::new();
    let apns = FakeApns::start(&pki).await;
    let server = TestServer::start_with(|args| {
        apns.configure(&pki, args);
        // Production defaults for the schedule: a 1 s coalescing window, 1 s polling.
        args.push_coalesce = Some("1s".into());
        args.push_poll_interval = Some("1s".into());
        args.push_backoff = Some("1m,5m,30m,2h,24h".into());
    })
    .await;
    let endpoint = server.endpoint(false);
    let enroll_started = Instant::now();
    let mut fleet = Vec::with_capacity(devices);
    let mut enrolling = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    for index in 0..devices {
        let mut device = server.device_on(endpoint.clone(), index);
        let gate = gate.clone();
        enrolling.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            device.enroll().await.expect("enroll");
            device
        });
    }
    while let Some(device) = enrolling.join_next().await {
        fleet.push(device.unwrap());
    }
    eprintln!(
        "enrolled {devices} devices in {:.1}s",
        enroll_started.elapsed().as_secs_f64()
    );

    // Each device waits for its push, then records when it connected and when its exchange
    // (command answered) finished.
    let mut waiting = tokio::task::JoinSet::new();
    let mut enqueued_at = std::collections::HashMap::new();
    let mut woken = Vec::new();
    for mut device in fleet {
        let pushed = apns.device(device.push_token());
        woken.push(device.udid().to_string());
        waiting.spawn(async move {
            pushed.notified().await;
            let connected = Instant::now();
            device.exchange().await.expect("exchange");
            (device.udid().to_string(), connected, Instant::now())
        });
    }
    let started = Instant::now();
    let mut queueing = tokio::task::JoinSet::new();
    for udid in woken {
        let gate = gate.clone();
        let client = server.client.clone();
        let url = format!("{}/api/v1/devices/{udid}/commands", server.base_url);
        let token = server.admin_token.clone();
        queueing.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let at = Instant::now();
            let response = client
                .post(&url)
                .bearer_auth(token)
                .json(&json!({"type": "ProfileList"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
            (udid, at)
        });
    }
    while let Some(done) = queueing.join_next().await {
        let (udid, at) = done.unwrap();
        enqueued_at.insert(udid, at);
    }
    let enqueue_elapsed = started.elapsed();
    let mut to_connect = Vec::with_capacity(devices);
    let mut to_answer = Vec::with_capacity(devices);
    while let Some(done) = waiting.join_next().await {
        let (udid, connected, answered) = done.unwrap();
        let at = enqueued_at[&udid];
        to_connect.push(connected.saturating_duration_since(at));
        to_answer.push(answered.saturating_duration_since(at));
    }
    let total = started.elapsed();
    to_connect.sort_unstable();
    to_answer.sort_unstable();
    let pushes = apns.pushes().len();
    println!(
        "fleet: {devices} devices · enqueue (admin API, 64 concurrent) {:.1}s · all answered after {:.1}s · {pushes} pushes · \
         enqueue→connect p50 {:.0} ms p99 {:.0} ms max {:.0} ms · enqueue→answered p50 {:.0} ms p99 {:.0} ms",
        enqueue_elapsed.as_secs_f64(),
        total.as_secs_f64(),
        percentile(&to_connect, 0.5).as_secs_f64() * 1000.0,
        percentile(&to_connect, 0.99).as_secs_f64() * 1000.0,
        to_connect.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        percentile(&to_answer, 0.5).as_secs_f64() * 1000.0,
        percentile(&to_answer, 0.99).as_secs_f64() * 1000.0,
    );
    let peak_rss = support::peak_rss();
    println!("fleet: peak RSS of the whole process (server + {devices} simulated devices + APNs): {peak_rss}");
    assert_eq!(to_connect.len(), devices, "every device was woken");
    server.stop().await;
}
