//! `pomona push <device>`: asks a running server, through its admin API, to push one device now,
//! and prints what APNs answered. Talks only HTTP to the server; must not load certificates.

use anyhow::Context as _;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    /// The device: UDID, EnrollmentID or serial number.
    pub device: String,
    /// Server base URL.
    #[arg(long, default_value = "https://localhost:8443")]
    pub server: String,
    /// Admin token file (default: pomona-data/admin-token).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// PEM CA certificate to trust for the server (default: pomona-data/tls/ca.pem when present).
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

/// Returns true when APNs accepted the push.
pub async fn run(args: PushArgs) -> anyhow::Result<bool> {
    let token_file = args
        .admin_token_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("pomona-data/admin-token"));
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("reading admin token file {}", token_file.display()))?;
    let default_ca = PathBuf::from("pomona-data/tls/ca.pem");
    let ca = args
        .ca
        .clone()
        .or_else(|| default_ca.exists().then_some(default_ca));
    let client = crate::cmdline::client(ca.as_deref())?;
    let url = format!(
        "{}/api/v1/devices/{}/push",
        args.server.trim_end_matches('/'),
        args.device
    );
    let response = client
        .post(&url)
        .bearer_auth(token.trim())
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let bytes = response.bytes().await.unwrap_or_default();
    // 200 and 502 carry what APNs said; other refusals an error.
    let pushed = serde_json::from_slice::<crate::api::Pushed>(&bytes).ok();
    if let Some(pushed) = pushed
        .as_ref()
        .filter(|p| status.is_success() && p.accepted)
    {
        println!(
            "pushed {}: APNs accepted it (apns-id {})",
            pushed.device_id,
            pushed.apns_id.as_deref().unwrap_or("-")
        );
        return Ok(true);
    }
    let reason = match pushed {
        Some(pushed) => pushed.result,
        None => serde_json::from_slice::<crate::api::ErrorBody>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| "no details".into()),
    };
    eprintln!("push to {} failed (HTTP {status}): {reason}", args.device);
    Ok(false)
}
