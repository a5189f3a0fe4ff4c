//! The drain benchmark (`pomona sim --drain-workers N`): the per-command cost of the server on
//! the workload other MDM servers are measured on. Every device enrolls, answers what the server
//! queued at enrollment, and queues its `--commands-per-device` DeviceInformation commands
//! through the admin API — none of which is timed. Then a few workers answer every queued
//! command, one device exchange after another (Idle, command, result, … until the server has no
//! more), as fast as the server answers. Devices that present no TLS client certificate sign
//! each message and share one HTTP/2 connection; with certificates each device uses its own.
//! The summary times the drain alone and, for the processes named by `--cpu-of` (the server; a
//! database's postmaster with its backends), the CPU time they spent per command, read from
//! `/proc` before and after. The enrollment, all devices at once before anything else, is
//! measured the same way: the server's CPU per enrollment, and so the enrollments per second
//! its cores could serve, whatever the simulator (which shares the machine) costs. Device keys
//! come from `--key-pool` and are made before either clock starts. Replicas on one database are
//! measured the same way: `--admin-server` queues the commands through one replica while the
//! devices enroll with and drain through another, or through several (`--also-server`, devices
//! spread round-robin); `--cpu-of` then names each replica and the database.

use super::device::{Endpoint, Faults, SimDevice};
use super::{hardware, SimArgs};
use anyhow::Context as _;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the drain measured.
#[derive(Debug, Default)]
pub struct DrainSummary {
    pub devices: usize,
    pub workers: usize,
    /// Commands answered during the drain.
    pub commands: u64,
    pub requests: u64,
    pub elapsed: Duration,
    /// CPU time of each `--cpu-of` process (with its children) during the drain.
    pub cpu: Vec<(u32, Duration)>,
    /// From the first device's enrollment to the last's.
    pub enroll_elapsed: Duration,
    /// CPU time of each `--cpu-of` process during the enrollment.
    pub enroll_cpu: Vec<(u32, Duration)>,
    /// Commands queued through the admin API before the drain.
    pub queued: u64,
    /// CPU time of each `--cpu-of` process while the commands were queued (and each device
    /// answered what its enrollment queued, one exchange).
    pub queue_cpu: Vec<(u32, Duration)>,
    pub failures: Vec<String>,
}

impl DrainSummary {
    pub fn commands_per_second(&self) -> f64 {
        self.commands as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Milliseconds of CPU per command for `cpu`.
    pub fn cpu_ms_per_command(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1000.0 / (self.commands.max(1) as f64)
    }

    pub fn line(&self) -> String {
        let mut line = format!(
            "drain: {} commands from {} devices answered by {} workers in {:.2}s = {:.0} commands/s ({} requests)",
            self.commands,
            self.devices,
            self.workers,
            self.elapsed.as_secs_f64(),
            self.commands_per_second(),
            self.requests
        );
        for (pid, cpu) in &self.cpu {
            line.push_str(&format!(
                " · pid {pid}: {:.2}s CPU = {:.3} ms/command",
                cpu.as_secs_f64(),
                self.cpu_ms_per_command(*cpu)
            ));
        }
        if !self.cpu.is_empty() {
            let total: Duration = self.cpu.iter().map(|(_, cpu)| *cpu).sum();
            line.push_str(&format!(
                " · together {:.3} ms/command",
                self.cpu_ms_per_command(total)
            ));
        }
        line
    }

    /// The enrollment's figures: enrollments/s, and each `--cpu-of` process's CPU per
    /// enrollment with the rate `cores` could serve at that cost.
    pub fn enrollment_line(&self, cores: usize) -> String {
        let mut line = format!(
            "enrollment: {} devices (token, profile, SCEP, Authenticate, TokenUpdate) in {:.2}s = {:.0}/s",
            self.devices,
            self.enroll_elapsed.as_secs_f64(),
            self.devices as f64 / self.enroll_elapsed.as_secs_f64().max(1e-9)
        );
        for (pid, cpu) in &self.enroll_cpu {
            let ms = cpu.as_secs_f64() * 1000.0 / (self.devices.max(1) as f64);
            line.push_str(&format!(
                " · pid {pid}: {:.2}s CPU = {ms:.3} ms/enrollment",
                cpu.as_secs_f64()
            ));
            // A replica that took no part (the enrollment went to another) has no capacity
            // figure.
            if ms > 0.0 {
                line.push_str(&format!(
                    ", {:.0}/s on {cores} cores",
                    cores as f64 * 1000.0 / ms
                ));
            }
        }
        line
    }

    /// The untimed queueing's CPU per queued command: on a replica that only queued (the
    /// devices being another's), the admin API's cost of a command.
    pub fn queueing_line(&self) -> String {
        let mut line = format!(
            "queueing (not timed): {} commands through the admin API, and one exchange per device",
            self.queued
        );
        for (pid, cpu) in &self.queue_cpu {
            line.push_str(&format!(
                " · pid {pid}: {:.2}s CPU = {:.3} ms/command",
                cpu.as_secs_f64(),
                cpu.as_secs_f64() * 1000.0 / (self.queued.max(1) as f64)
            ));
        }
        line
    }
}

/// Enrolls and loads the fleet, then drains it with `workers` workers.
pub async fn run(
    args: &SimArgs,
    workers: usize,
    endpoints: &[Arc<Endpoint>],
    admin_token: String,
) -> anyhow::Result<DrainSummary> {
    anyhow::ensure!(!endpoints.is_empty(), "the drain needs a server");
    anyhow::ensure!(workers > 0, "--drain-workers must be at least 1");
    anyhow::ensure!(
        args.commands_per_device > 0,
        "--drain-workers needs --commands-per-device (the commands to drain)"
    );
    let count = args.devices;
    let pool = args.key_pool.clone();
    let mut keys =
        tokio::task::spawn_blocking(move || super::keys::device_keys(count, pool.as_deref()))
            .await?;
    let started = Instant::now();
    let cpu_before = cpu_times(&args.cpu_of)?;
    let mut enrolling = Vec::with_capacity(count);
    for index in 0..count {
        let mut device = SimDevice::new(
            hardware(args.seed, index),
            // Round-robin over the replicas: each device stays with its own.
            endpoints[index % endpoints.len()].clone(),
            Faults::default(),
            args.seed ^ (index as u64) << 1,
        );
        device.pregenerated_key = keys.pop();
        enrolling.push(tokio::spawn(async move {
            device.enroll().await.context("enrolling")?;
            anyhow::Ok(device)
        }));
    }
    let mut enrolled = Vec::with_capacity(count);
    for task in enrolling {
        enrolled.push(task.await??);
    }
    let enroll_elapsed = started.elapsed();
    let queue_before = cpu_times(&args.cpu_of)?;
    let enroll_cpu = cpu_spent(&cpu_before, &queue_before);
    let mut loading = Vec::with_capacity(count);
    for mut device in enrolled {
        let (token, server) = (admin_token.clone(), args.admin_url().to_string());
        let commands = args.commands_per_device;
        loading.push(tokio::spawn(async move {
            load(&mut device, &server, &token, commands).await?;
            anyhow::Ok(device)
        }));
    }
    let mut fleet = VecDeque::with_capacity(count);
    for task in loading {
        fleet.push_back(task.await??);
    }
    eprintln!(
        "sim: {count} devices enrolled and {} commands queued in {:.1}s (not timed); draining",
        count * args.commands_per_device,
        started.elapsed().as_secs_f64()
    );
    let queue_cpu = cpu_spent(&queue_before, &cpu_times(&args.cpu_of)?);
    let answered_before: u64 = fleet.iter().map(answered).sum();
    let requests_before: u64 = fleet.iter().map(|d| d.stats.requests).sum();
    let queue = Arc::new(Mutex::new(fleet));
    let cpu_before = cpu_times(&args.cpu_of)?;
    let drain_started = Instant::now();
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let queue = queue.clone();
        let commands = args.commands_per_device as u64;
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut failures = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                let Some(mut device) = next else { break };
                if let Err(e) = drain_one(&mut device, commands).await {
                    failures.push(format!("{}: {e}", device.udid()));
                }
                done.push(device);
            }
            (done, failures)
        }));
    }
    let mut summary = DrainSummary {
        devices: count,
        workers,
        enroll_elapsed,
        enroll_cpu,
        queued: (count * args.commands_per_device) as u64,
        queue_cpu,
        ..DrainSummary::default()
    };
    let mut drained = Vec::with_capacity(count);
    for task in tasks {
        let (done, failures) = task.await?;
        drained.extend(done);
        summary.failures.extend(failures);
    }
    summary.elapsed = drain_started.elapsed();
    let cpu_after = cpu_times(&args.cpu_of)?;
    summary.cpu = cpu_spent(&cpu_before, &cpu_after);
    summary.commands = drained.iter().map(answered).sum::<u64>() - answered_before;
    summary.requests = drained.iter().map(|d| d.stats.requests).sum::<u64>() - requests_before;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("sim: {}", summary.enrollment_line(cores));
    println!("sim: {}", summary.queueing_line());
    println!("sim: {}", summary.line());
    for failure in summary.failures.iter().take(10) {
        eprintln!("sim: failure: {failure}");
    }
    Ok(summary)
}

fn answered(device: &SimDevice) -> u64 {
    device.stats.acknowledged + device.stats.errors
}

/// Answers what the server queued at enrollment (its inventory), and queues
/// `commands` DeviceInformation commands for the drain.
async fn load(
    device: &mut SimDevice,
    server: &str,
    token: &str,
    commands: usize,
) -> anyhow::Result<()> {
    device
        .exchange()
        .await
        .context("answering the enrollment's commands")?;
    let client = device.endpoint().client.clone();
    let url = format!(
        "{}/api/v1/devices/{}/commands",
        server.trim_end_matches('/'),
        device.udid()
    );
    let command = serde_json::json!({"type": "DeviceInformation", "queries": ["OSVersion", "SerialNumber", "Model", "DeviceName"]});
    for _ in 0..commands {
        let response = client
            .post(&url)
            .bearer_auth(token)
            .json(&command)
            .send()
            .await?;
        device.stats.admin_requests += 1;
        anyhow::ensure!(
            response.status().is_success(),
            "queueing a command: HTTP {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Exchanges until the device has answered its `commands` (a failed exchange is retried a few
/// times, as a device would at its next poll).
async fn drain_one(device: &mut SimDevice, commands: u64) -> anyhow::Result<()> {
    let target = answered(device) + commands;
    let mut failures = 0;
    while answered(device) < target {
        match device.exchange().await {
            Ok(exchange) if exchange.commands.is_empty() => {
                anyhow::bail!(
                    "the server had no more commands after {} of {commands}",
                    commands - (target - answered(device))
                )
            }
            Ok(_) => {}
            Err(e) if failures < 3 => {
                failures += 1;
                tracing::debug!(device = device.udid(), error = %e, "exchange failed; retrying");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// User plus system CPU time of each process and its direct children (a postmaster's backends),
/// from `/proc`.
/// CPU spent by each process between two readings of `cpu_times`.
fn cpu_spent(before: &[(u32, Duration)], after: &[(u32, Duration)]) -> Vec<(u32, Duration)> {
    before
        .iter()
        .zip(after)
        .map(|((pid, before), (_, after))| (*pid, after.saturating_sub(*before)))
        .collect()
}

fn cpu_times(pids: &[u32]) -> anyhow::Result<Vec<(u32, Duration)>> {
    if pids.is_empty() {
        return Ok(Vec::new());
    }
    // /proc counts in USER_HZ, which Linux fixes at 100 in its user ABI on every architecture
    // Pomona builds for (the kernel's own tick rate is converted).
    let ticks_per_second = 100.0;
    let mut stats = Vec::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc (--cpu-of needs Linux)")? {
        let name = entry?.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A process may exit while we look: skip it.
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(parsed) = parse_stat(&text) {
                stats.push((pid, parsed));
            }
        }
    }
    pids.iter()
        .map(|&pid| {
            anyhow::ensure!(
                stats.iter().any(|(p, _)| *p == pid),
                "--cpu-of {pid}: no such process"
            );
            let ticks: u64 = stats
                .iter()
                .filter(|(p, s)| *p == pid || s.parent == pid)
                .map(|(_, s)| s.ticks)
                .sum();
            Ok((
                pid,
                Duration::from_secs_f64(ticks as f64 / ticks_per_second),
            ))
        })
        .collect()
}

struct Stat {
    parent: u32,
    /// utime + stime, in clock ticks.
    ticks: u64,
}

/// The parent and CPU ticks of a `/proc/<pid>/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from its closing parenthesis.
fn parse_stat(text: &str) -> Option<Stat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state (3), ppid (4), …, utime (14), stime (15).
    let parent = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Stat {
        parent,
        ticks: utime + stime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (postgres: a (b) c) S 4000 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 1 0 123 456 789";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.parent, 4000);
        assert_eq!(stat.ticks, 325);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn this_process_has_a_cpu_time_and_a_missing_one_is_named() {
        let me = std::process::id();
        let times = cpu_times(&[me]).unwrap();
        assert_eq!(times.len(), 1);
        let error = cpu_times(&[u32::MAX]).unwrap_err().to_string();
        assert!(error.contains("no such process"), "{error}");
    }

    #[test]
    fn the_summary_line_gives_commands_per_second_and_cpu_per_command() {
        let summary = DrainSummary {
            devices: 10,
            workers: 2,
            commands: 50,
            requests: 60,
            elapsed: Duration::from_millis(500),
            cpu: vec![
                (1, Duration::from_millis(20)),
                (2, Duration::from_millis(30)),
            ],
            ..DrainSummary::default()
        };
        let line = summary.line();
        assert!(line.contains("= 100 commands/s"), "{line}");
        assert!(
            line.contains("pid 1: 0.02s CPU = 0.400 ms/command"),
            "{line}"
        );
        assert!(line.contains("together 1.000 ms/command"), "{line}");
    }

    #[test]
    fn the_enrollment_line_gives_the_cpu_per_enrollment_and_what_the_cores_could_serve() {
        let summary = DrainSummary {
            devices: 100,
            enroll_elapsed: Duration::from_secs(2),
            enroll_cpu: vec![(7, Duration::from_millis(400))],
            ..DrainSummary::default()
        };
        let line = summary.enrollment_line(2);
        assert!(line.contains("in 2.00s = 50/s"), "{line}");
        assert!(
            line.contains("pid 7: 0.40s CPU = 4.000 ms/enrollment, 500/s on 2 cores"),
            "{line}"
        );
    }

    #[test]
    fn a_replica_that_took_no_part_in_the_enrollment_gets_no_capacity_figure() {
        let summary = DrainSummary {
            devices: 100,
            enroll_elapsed: Duration::from_secs(2),
            enroll_cpu: vec![(7, Duration::ZERO), (8, Duration::from_millis(400))],
            queued: 500,
            queue_cpu: vec![(7, Duration::from_millis(100))],
            ..DrainSummary::default()
        };
        let line = summary.enrollment_line(2);
        assert!(
            line.contains("pid 7: 0.00s CPU = 0.000 ms/enrollment ·"),
            "{line}"
        );
        assert!(
            line.contains("pid 8: 0.40s CPU = 4.000 ms/enrollment, 500/s"),
            "{line}"
        );
        let line = summary.queueing_line();
        assert!(line.contains("500 commands"), "{line}");
        assert!(
            line.contains("pid 7: 0.10s CPU = 0.200 ms/command"),
            "{line}"
        );
    }
}
