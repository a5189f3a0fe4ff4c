//! `pomona lock | erase | lost-mode | locate | restart | shutdown | clear-passcode DEVICE`:
//! starts a device action through the admin API and follows it until the device answers,
//! printing each state as it arrives (a location for locate). Erase asks for the device's
//! serial number to be typed (or `--yes`). PINs are read from a file or stdin, never from
//! the command line (where shell history and `ps` would keep them).

use super::AdminConnection;
use crate::api::{self, ActionKind, ActionRequest};
use anyhow::Context as _;
use serde_json::Value;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct Follow {
    /// Return once the action is queued instead of waiting for the device's answer.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the device's answer.
    #[arg(long, default_value = "120s", value_parser = crate::cmdline::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    /// The device: its UDID or serial number.
    pub device: String,
    /// Shown on the lock screen.
    #[arg(long)]
    pub message: Option<String>,
    /// Shown on the lock screen.
    #[arg(long)]
    pub phone: Option<String>,
    /// macOS: a file holding the six-digit PIN that unlocks the Mac (`-` reads stdin).
    #[arg(long)]
    pub pin_file: Option<PathBuf>,
    #[command(flatten)]
    pub follow: Follow,
}

#[derive(Debug, Clone, clap::Args)]
pub struct EraseArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    /// The device: its UDID or serial number.
    pub device: String,
    /// macOS: a file holding the six-digit PIN (`-` reads stdin).
    #[arg(long)]
    pub pin_file: Option<PathBuf>,
    /// iOS: keep the cellular data plan.
    #[arg(long)]
    pub preserve_data_plan: bool,
    /// iOS: disable Proximity Setup on the next Setup Assistant run.
    #[arg(long)]
    pub disallow_proximity_setup: bool,
    /// iOS 17 and later: re-enroll by itself after the erase.
    #[arg(long)]
    pub return_to_service: bool,
    /// Do not ask for confirmation (scripts).
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub follow: Follow,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LostModeArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    /// The device: its UDID or serial number.
    pub device: String,
    /// Shown on the lock screen (a message or a phone number is required to enable).
    #[arg(long)]
    pub message: Option<String>,
    #[arg(long)]
    pub phone: Option<String>,
    #[arg(long)]
    pub footnote: Option<String>,
    /// Leave Lost Mode instead.
    #[arg(long, conflicts_with_all = ["message", "phone", "footnote"])]
    pub disable: bool,
    #[command(flatten)]
    pub follow: Follow,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    /// The device: its UDID or serial number.
    pub device: String,
    #[command(flatten)]
    pub follow: Follow,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RestartArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    /// The device: its UDID or serial number.
    pub device: String,
    /// macOS: ask the user to restart instead of restarting at once.
    #[arg(long)]
    pub notify_user: bool,
    #[command(flatten)]
    pub follow: Follow,
}

/// Which action the command line asked for.
pub enum ActionCommand {
    Lock(LockArgs),
    Erase(EraseArgs),
    LostMode(LostModeArgs),
    Locate(DeviceArgs),
    Restart(RestartArgs),
    Shutdown(DeviceArgs),
    ClearPasscode(DeviceArgs),
}

/// Runs one action command; Ok(true) when the device acknowledged it (or, with `--no-wait`,
/// when it was queued).
pub async fn run(command: ActionCommand) -> anyhow::Result<bool> {
    let (connection, device, follow, request) = match command {
        ActionCommand::Lock(a) => {
            let request = ActionRequest {
                action: ActionKind::Lock,
                message: a.message,
                phone_number: a.phone,
                pin: read_pin(a.pin_file.as_deref())?,
                ..ActionRequest::default()
            };
            (a.connection, a.device, a.follow, request)
        }
        ActionCommand::Erase(a) => {
            let confirm = confirm_erase(&a.connection, &a.device, a.yes).await?;
            let request = ActionRequest {
                action: ActionKind::Erase,
                confirm: Some(confirm),
                pin: read_pin(a.pin_file.as_deref())?,
                preserve_data_plan: a.preserve_data_plan.then_some(true),
                disallow_proximity_setup: a.disallow_proximity_setup.then_some(true),
                return_to_service: a.return_to_service.then_some(true),
                ..ActionRequest::default()
            };
            (a.connection, a.device, a.follow, request)
        }
        ActionCommand::LostMode(a) if a.disable => (
            a.connection,
            a.device,
            a.follow,
            ActionRequest {
                action: ActionKind::DisableLostMode,
                ..ActionRequest::default()
            },
        ),
        ActionCommand::LostMode(a) => {
            anyhow::ensure!(
                a.message.is_some() || a.phone.is_some(),
                "give --message or --phone (shown on the lock screen), or --disable"
            );
            let request = ActionRequest {
                action: ActionKind::EnableLostMode,
                message: a.message,
                phone_number: a.phone,
                footnote: a.footnote,
                ..ActionRequest::default()
            };
            (a.connection, a.device, a.follow, request)
        }
        ActionCommand::Locate(a) => (a.connection, a.device, a.follow, only(ActionKind::Locate)),
        ActionCommand::Restart(a) => {
            let request = ActionRequest {
                action: ActionKind::Restart,
                notify_user: a.notify_user.then_some(true),
                ..ActionRequest::default()
            };
            (a.connection, a.device, a.follow, request)
        }
        ActionCommand::Shutdown(a) => {
            (a.connection, a.device, a.follow, only(ActionKind::Shutdown))
        }
        ActionCommand::ClearPasscode(a) => (
            a.connection,
            a.device,
            a.follow,
            only(ActionKind::ClearPasscode),
        ),
    };
    let kind = request.action.as_str();
    let started: api::StartedAction = connection
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/devices/{}/actions", encode(&device)),
            Some(&request),
        )
        .await?;
    let (action_id, device_id) = (started.action_id, started.device_id);
    println!("{kind} for {device_id}: action {action_id}");
    let mut last = started.state;
    println!("  {last}{}", detail(started.detail.as_deref()));
    if follow.no_wait || last == "NotApplicable" {
        return Ok(last != "NotApplicable");
    }
    let deadline = tokio::time::Instant::now() + follow.timeout;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let view: api::ActionDetail = connection
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/actions/{}", encode(&action_id)),
                None::<&()>,
            )
            .await?;
        let Some(row) = view.devices.iter().find(|r| r.device_id == device_id) else {
            anyhow::bail!("the server no longer shows action {action_id}");
        };
        if row.state != last {
            println!("  {}{}", row.state, detail(row.detail.as_deref()));
            last = row.state.clone();
        }
        match last.as_str() {
            "Acknowledged" => {
                if let Some(location) = row
                    .result
                    .as_ref()
                    .and_then(Value::as_object)
                    .filter(|r| r.contains_key("latitude"))
                {
                    println!(
                        "  location: {}, {} (±{} m) at {}",
                        location["latitude"],
                        location["longitude"],
                        location.get("horizontal_accuracy").unwrap_or(&Value::Null),
                        location
                            .get("timestamp")
                            .and_then(Value::as_str)
                            .unwrap_or("unknown time")
                    );
                }
                return Ok(true);
            }
            "Failed" | "NotApplicable" => return Ok(false),
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "no answer from the device within {:?}: the action stays {last}; follow it with GET /api/v1/actions/{action_id}",
                follow.timeout
            );
            return Ok(false);
        }
    }
}

/// A request for an action that takes no fields.
fn only(action: ActionKind) -> ActionRequest {
    ActionRequest {
        action,
        ..ActionRequest::default()
    }
}

fn detail(detail: Option<&str>) -> String {
    detail.map(|d| format!(": {d}")).unwrap_or_default()
}

/// Path segments are sent percent-encoded (declared action ids contain `/` and `@`).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Reads a six-digit PIN from a file or stdin (`-`). The value is never printed.
fn read_pin(path: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let Some(path) = path else { return Ok(None) };
    let text = if path == std::path::Path::new("-") {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the PIN file {}", path.display()))?
    };
    let pin = text.trim().to_string();
    anyhow::ensure!(
        pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit()),
        "the PIN must be exactly six digits (the value is not shown)"
    );
    Ok(Some(pin))
}

/// Erase asks the administrator to type the device's serial number (or UDID), unless `--yes`.
/// Returns what the server checks as confirmation.
async fn confirm_erase(
    connection: &AdminConnection,
    device: &str,
    yes: bool,
) -> anyhow::Result<String> {
    let view: api::DeviceDetail = connection
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/devices/{}", encode(device)),
            None::<&()>,
        )
        .await?;
    let view = view.device;
    let udid = view.device_id.clone();
    let expected = view.serial_number.clone().unwrap_or_else(|| udid.clone());
    if yes {
        return Ok(expected);
    }
    anyhow::ensure!(
        std::io::stdin().is_terminal(),
        "refusing to erase without confirmation: stdin is not a terminal (pass --yes)"
    );
    eprint!(
        "Erase {} ({}, {}, serial {})? ALL DATA on it will be lost.\nType the serial number to confirm: ",
        view.device_name.as_deref().unwrap_or("the device"),
        view.product_name.as_deref().unwrap_or("unknown model"),
        udid,
        expected
    );
    std::io::stderr().flush()?;
    let mut typed = String::new();
    std::io::stdin().lock().read_line(&mut typed)?;
    anyhow::ensure!(typed.trim() == expected, "not confirmed: nothing was sent");
    Ok(expected)
}

#[cfg(test)]
mod tests {
    #[test]
    fn declared_action_ids_survive_as_one_path_segment() {
        assert_eq!(
            super::encode("DeviceAction/lock-lost@0123abcd"),
            "DeviceAction%2Flock-lost%400123abcd"
        );
    }
}
