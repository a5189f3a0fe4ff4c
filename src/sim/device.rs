//! One simulated device on the wire: enrolls (profile, SCEP, Authenticate, TokenUpdate), then runs command
//! exchanges — `Idle`, execute, report, until the server answers with an empty body — exactly as
//! PROTOCOL.md §4–§5 describe. A result the server did not accept (non-2xx or a broken
//! connection) is cached and reported again at the start of the next exchange, as devices do.
//! Once it has reported an acknowledged EraseDevice the device is wiped: every later request
//! (check-in, exchange) fails with `SimError::Erased` without reaching the server.

use super::behaviour::{self, Answer, DeviceState, Hardware};
use super::identity::{self, ProfileSource, SimIdentity};
use crate::protocol::report::encode_report;
use crate::protocol::{CommandEnvelope, ReportStatus, CHECKIN_CONTENT_TYPE, CONNECT_CONTENT_TYPE};
use plist::{Dictionary, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where and how devices talk to the server (shared by a fleet).
pub struct Endpoint {
    /// Trusts the server; presents no client certificate (enrollment, SCEP, admin API).
    pub client: reqwest::Client,
    /// Base URL, e.g. https://localhost:8443.
    pub server: String,
    /// Send check-ins to the ServerURL (as a profile without CheckInURL makes devices do).
    pub one_url: bool,
    /// How devices obtain their enrollment profile; None: they cannot enroll.
    pub profile_source: Option<ProfileSource>,
    /// PEM of the server's CA, trusted in addition to the profile's root payloads.
    pub server_ca_pem: Option<Vec<u8>>,
    /// Present the identity in the TLS handshake (false: as behind a TLS-terminating proxy,
    /// where only `Mdm-Signature` can prove it).
    pub tls_client_certificates: bool,
    /// How long a device keeps an idle connection to the server open after its exchange
    /// (None: 90 s). A real device closes it soon after its session ends; a short time lets a
    /// fleet larger than the open-file limit take turns.
    pub idle_connection_timeout: Option<Duration>,
    /// Fleet-wide counters for progress output.
    pub progress: Progress,
}

/// Counters shared by every device of a fleet, read by the progress printer.
#[derive(Debug, Default)]
pub struct Progress {
    pub enrolled: std::sync::atomic::AtomicU64,
    pub requests: std::sync::atomic::AtomicU64,
    pub failed_requests: std::sync::atomic::AtomicU64,
    pub answered: std::sync::atomic::AtomicU64,
}

impl Endpoint {
    /// `server` is the base URL (https://host:port). In one-URL mode check-ins go to the
    /// connect URL and are recognised by their content type.
    pub fn new(client: reqwest::Client, server: &str, one_url: bool) -> Self {
        Self {
            client,
            server: server.trim_end_matches('/').to_string(),
            one_url,
            profile_source: None,
            server_ca_pem: None,
            tls_client_certificates: true,
            idle_connection_timeout: None,
            progress: Progress::default(),
        }
    }

    /// Devices obtain their enrollment profile this way.
    pub fn enrolling_with(mut self, source: ProfileSource) -> Self {
        self.profile_source = Some(source);
        self
    }

    /// Devices trust this CA (PEM) for the server, besides the profile's root payloads.
    pub fn trusting(mut self, pem: Option<Vec<u8>>) -> Self {
        self.server_ca_pem = pem;
        self
    }
}

/// Fault injection for one device, as probabilities in [0, 1].
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub not_now_rate: f64,
    pub error_rate: f64,
}

/// Counters and latencies of one device, merged into the fleet summary.
#[derive(Debug, Default, Clone)]
pub struct DeviceStats {
    pub requests: u64,
    /// Admin API calls made on this device's behalf (queueing its workload).
    pub admin_requests: u64,
    pub failed_requests: u64,
    pub acknowledged: u64,
    pub errors: u64,
    pub not_now: u64,
    pub latencies_us: Vec<u32>,
    pub last_failure: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: {source}")]
    Transport {
        what: String,
        source: reqwest::Error,
    },
    #[error("{what}: server sent an undecodable command: {reason}")]
    BadCommand { what: String, reason: String },
    #[error("device was erased")]
    Erased,
    #[error("{0}")]
    Enroll(#[from] identity::EnrollError),
}

/// The outcome of one exchange.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// RequestTypes of the commands received, in order.
    pub received: Vec<String>,
    /// Each command received, in order, with what the device answered (for oracles).
    pub commands: Vec<ReceivedCommand>,
}

/// One command a device received and how it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedCommand {
    pub uuid: String,
    pub request_type: String,
    /// The `Identifier` of a RemoveProfile, the PayloadIdentifier of an InstallProfile.
    pub identifier: Option<String>,
    pub status: ReportStatus,
}

pub struct SimDevice {
    pub hw: Hardware,
    pub state: DeviceState,
    pub stats: DeviceStats,
    endpoint: Arc<Endpoint>,
    /// The identity from SCEP, once the enrollment profile is installed.
    pub identity: Option<Arc<SimIdentity>>,
    /// A key generated ahead of time (benchmarks keep key generation out of the timing).
    pub pregenerated_key: Option<openssl::pkey::PKey<openssl::pkey::Private>>,
    pub faults: Faults,
    rng: fastrand::Rng,
    push_token: Vec<u8>,
    push_magic: String,
    /// A report the server has not accepted yet; sent before the next Idle.
    unsent_report: Option<Vec<u8>>,
    /// The EraseDevice acknowledgement has been sent: the device is wiped and silent.
    wiped: bool,
}

impl SimDevice {
    pub fn new(hw: Hardware, endpoint: Arc<Endpoint>, faults: Faults, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let push_token = (0..32).map(|_| rng.u8(..)).collect();
        let unlock_token: Vec<u8> = (0..64).map(|_| rng.u8(..)).collect();
        let push_magic = super::uuid_from(&mut rng);
        Self {
            hw,
            // The unlock token lives in the state: ClearPasscode compares against it.
            state: DeviceState {
                unlock_token: behaviour::Secret::new(unlock_token),
                ..DeviceState::default()
            },
            stats: DeviceStats::default(),
            endpoint,
            identity: None,
            pregenerated_key: None,
            faults,
            rng,
            push_token,
            push_magic,
            unsent_report: None,
            wiped: false,
        }
    }

    /// The server this device talks to, and the shared HTTP client.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    pub fn udid(&self) -> &str {
        &self.hw.udid
    }

    /// Installs the enrollment profile (SCEP identity), unless already done.
    pub async fn install_profile(&mut self) -> Result<Arc<SimIdentity>, SimError> {
        if let Some(identity) = &self.identity {
            return Ok(identity.clone());
        }
        let source = self.endpoint.profile_source.clone().ok_or_else(|| {
            identity::EnrollError("no enrollment profile source (admin token or profile)".into())
        })?;
        let profile =
            identity::fetch_profile(&self.endpoint.client, &self.endpoint.server, &source).await?;
        let installed = identity::install_profile(
            &self.endpoint.client,
            &profile,
            "Pomona device identity",
            self.endpoint.server_ca_pem.as_deref(),
            self.pregenerated_key.take(),
            self.endpoint.idle_connection_timeout,
        )
        .await?;
        let installed = Arc::new(installed);
        self.identity = Some(installed.clone());
        Ok(installed)
    }

    /// The topic from the profile (a placeholder before enrollment).
    fn topic(&self) -> String {
        self.identity
            .as_ref()
            .map(|i| i.instructions.topic.clone())
            .unwrap_or_else(|| crate::protocol::enrollment_profile::PLACEHOLDER_TOPIC.into())
    }

    fn connect_url(&self) -> String {
        match &self.identity {
            Some(i) => i.instructions.server_url.clone(),
            None => format!("{}/mdm/connect", self.endpoint.server),
        }
    }

    fn checkin_url(&self) -> String {
        match &self.identity {
            Some(_) if self.endpoint.one_url => self.connect_url(),
            Some(i) => i
                .instructions
                .checkin_url
                .clone()
                .unwrap_or_else(|| i.instructions.server_url.clone()),
            None if self.endpoint.one_url => self.connect_url(),
            None => format!("{}/mdm/checkin", self.endpoint.server),
        }
    }

    /// Installs the profile (SCEP), then Authenticate and TokenUpdate (with an UnlockToken,
    /// as iOS sends it).
    /// The APNs token this device sends in TokenUpdate (raw bytes).
    pub fn push_token(&self) -> &[u8] {
        &self.push_token
    }

    pub fn push_magic(&self) -> &str {
        &self.push_magic
    }

    /// The UnlockToken this device sends in TokenUpdate (a secret: tests compare, never print).
    pub fn unlock_token(&self) -> &[u8] {
        self.state.unlock_token.expose()
    }

    /// Whether the device acknowledged an EraseDevice and so no longer talks to the server.
    pub fn is_erased(&self) -> bool {
        self.wiped
    }

    /// Authenticate, then TokenUpdate (with an UnlockToken, as iOS sends it).
    pub async fn enroll(&mut self) -> Result<(), SimError> {
        if self.wiped {
            return Err(SimError::Erased); // a wiped device is not enrolled again by itself
        }
        self.install_profile().await?;
        let topic = self.topic();
        let hw = &self.hw;
        let mut auth = Dictionary::new();
        auth.insert("MessageType".into(), s("Authenticate"));
        auth.insert("Topic".into(), s(&topic));
        auth.insert("UDID".into(), s(&hw.udid));
        auth.insert("SerialNumber".into(), s(&hw.serial_number));
        auth.insert("Model".into(), s(&hw.model));
        auth.insert("ModelName".into(), s(&hw.model_name));
        auth.insert("ProductName".into(), s(&hw.product_name));
        auth.insert("OSVersion".into(), s(&hw.os_version));
        auth.insert("BuildVersion".into(), s(&hw.build_version));
        auth.insert("DeviceName".into(), s(&hw.device_name));
        self.checkin(auth, "Authenticate").await?;

        let mut token = Dictionary::new();
        token.insert("MessageType".into(), s("TokenUpdate"));
        token.insert("Topic".into(), s(&topic));
        token.insert("UDID".into(), s(&self.hw.udid));
        token.insert("Token".into(), Value::Data(self.push_token.clone()));
        token.insert("PushMagic".into(), s(&self.push_magic));
        token.insert(
            "UnlockToken".into(),
            Value::Data(self.state.unlock_token.expose().to_vec()),
        );
        token.insert("AwaitingConfiguration".into(), Value::Boolean(false));
        self.checkin(token, "TokenUpdate").await?;
        self.endpoint.progress.enrolled.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Sends CheckOut: the enrollment profile was removed, and with it, as on a real device,
    /// every profile the server installed.
    pub async fn check_out(&mut self) -> Result<(), SimError> {
        self.state.profiles.clear();
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), s("CheckOut"));
        d.insert("Topic".into(), s(&self.topic()));
        d.insert("UDID".into(), s(&self.hw.udid));
        self.checkin(d, "CheckOut").await.map(|_| ())
    }

    /// Sends any check-in dictionary and returns the response body.
    pub async fn checkin(&mut self, dict: Dictionary, what: &str) -> Result<Vec<u8>, SimError> {
        let body = crate::protocol::to_xml(&Value::Dictionary(dict));
        let url = self.checkin_url();
        self.put(&url, CHECKIN_CONTENT_TYPE, body, what).await
    }

    /// One exchange: report any cached result (else Idle), then answer each command the server
    /// sends until it answers with an empty body.
    pub async fn exchange(&mut self) -> Result<Exchange, SimError> {
        if self.wiped {
            return Err(SimError::Erased);
        }
        let mut exchange = Exchange::default();
        let mut body = match self.unsent_report.take() {
            Some(report) => report,
            None => encode_report(&self.hw.udid, ReportStatus::Idle, None, Dictionary::new()),
        };
        loop {
            let url = self.connect_url();
            let response = match self
                .put(&url, CONNECT_CONTENT_TYPE, body.clone(), "connect")
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    if !is_idle(&body) {
                        self.unsent_report = Some(body);
                    }
                    return Err(e);
                }
            };
            if response.is_empty() {
                return Ok(exchange);
            }
            let (uuid, request_type, command) =
                CommandEnvelope::decode(&response).map_err(|e| SimError::BadCommand {
                    what: "connect".into(),
                    reason: e.reason,
                })?;
            exchange.received.push(request_type.clone());
            let answer = self.answer(&request_type, &command);
            exchange.commands.push(ReceivedCommand {
                uuid: uuid.clone(),
                request_type: request_type.clone(),
                identifier: command_identifier(&request_type, &command),
                status: answer.status,
            });
            if answer.status != ReportStatus::NotNow {
                self.endpoint.progress.answered.fetch_add(1, Relaxed);
            }
            match answer.status {
                ReportStatus::Acknowledged => self.stats.acknowledged += 1,
                ReportStatus::Error => self.stats.errors += 1,
                ReportStatus::NotNow => self.stats.not_now += 1,
                _ => {}
            }
            body = encode_report(&self.hw.udid, answer.status, Some(&uuid), answer.keys);
            if self.state.erased && answer.status == ReportStatus::Acknowledged {
                // Report the acknowledgement once, then forget everything: an erased device is
                // gone. Apple: the device does not retry this response if it fails, so a lost
                // report is not cached either.
                let _ = self.put(&url, CONNECT_CONTENT_TYPE, body, "connect").await;
                self.state = DeviceState {
                    erased: true,
                    ..DeviceState::default()
                };
                self.unsent_report = None;
                self.wiped = true;
                return Ok(exchange);
            }
        }
    }

    fn answer(&mut self, request_type: &str, command: &Dictionary) -> Answer {
        let roll = self.rng.f64();
        if roll < self.faults.not_now_rate {
            if !behaviour::never_not_now(request_type) {
                return Answer {
                    status: ReportStatus::NotNow,
                    keys: Dictionary::new(),
                };
            }
        } else if roll < self.faults.not_now_rate + self.faults.error_rate {
            return Answer::error(-1, "PomonaSimulatorInjected", "Injected failure");
        }
        behaviour::execute(&self.hw, &mut self.state, request_type, command)
    }

    async fn put(
        &mut self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
        what: &str,
    ) -> Result<Vec<u8>, SimError> {
        if self.wiped {
            return Err(SimError::Erased); // no check-in, no command fetch, ever again
        }
        let started = Instant::now();
        self.stats.requests += 1;
        self.endpoint.progress.requests.fetch_add(1, Relaxed);
        let identity = self.identity.clone();
        let client = match &identity {
            Some(id) if self.endpoint.tls_client_certificates => &id.tls_client,
            _ => &self.endpoint.client,
        };
        let mut request = client
            .put(url)
            .header("Content-Type", content_type)
            .header("User-Agent", "MDM/1.0");
        if let Some(id) = identity.as_ref().filter(|i| i.instructions.sign_message) {
            request = request.header("Mdm-Signature", id.sign(&body));
        }
        let result = request.body(body).send().await;
        let outcome = match result {
            Err(source) => Err(SimError::Transport {
                what: what.into(),
                source,
            }),
            Ok(response) => {
                let status = response.status();
                match response.bytes().await {
                    Err(source) => Err(SimError::Transport {
                        what: what.into(),
                        source,
                    }),
                    Ok(bytes) if status.is_success() => Ok(bytes.to_vec()),
                    Ok(bytes) => Err(SimError::Status {
                        what: what.into(),
                        status: status.as_u16(),
                        body: String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                            .trim()
                            .to_string(),
                    }),
                }
            }
        };
        self.stats
            .latencies_us
            .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
        if let Err(e) = &outcome {
            self.stats.failed_requests += 1;
            self.endpoint.progress.failed_requests.fetch_add(1, Relaxed);
            self.stats.last_failure = Some(e.to_string());
        }
        outcome
    }

    /// Sleeps a jittered interval around `base` (±20 %), so a fleet does not poll in lockstep.
    pub async fn jittered_sleep(&mut self, base: Duration) {
        let factor = 0.8 + self.rng.f64() * 0.4;
        tokio::time::sleep(base.mul_f64(factor)).await;
    }
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn is_idle(body: &[u8]) -> bool {
    crate::protocol::Report::parse(body).is_ok_and(|r| r.status == ReportStatus::Idle)
}

/// The profile a command is about: RemoveProfile's `Identifier`, or the PayloadIdentifier of
/// an (unsigned) InstallProfile payload.
fn command_identifier(request_type: &str, command: &Dictionary) -> Option<String> {
    match request_type {
        "RemoveProfile" => command
            .get("Identifier")
            .and_then(Value::as_string)
            .map(str::to_string),
        "InstallProfile" => command
            .get("Payload")
            .and_then(Value::as_data)
            .and_then(|p| crate::protocol::profile::ProfileSummary::parse(p).ok())
            .map(|s| s.identifier),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> SimDevice {
        // Nothing listens here; a request that went out would fail as a transport error.
        let endpoint = Endpoint::new(reqwest::Client::new(), "https://127.0.0.1:9", false);
        SimDevice::new(
            super::super::hardware(1, 0),
            Arc::new(endpoint),
            Faults::default(),
            1,
        )
    }

    #[tokio::test]
    async fn a_wiped_device_sends_nothing_at_all() {
        let mut device = device();
        device.wiped = true;
        assert!(device.is_erased());
        assert!(matches!(device.exchange().await, Err(SimError::Erased)));
        assert!(matches!(device.check_out().await, Err(SimError::Erased)));
        assert!(matches!(device.enroll().await, Err(SimError::Erased)));
        assert_eq!(
            device.stats.requests, 0,
            "an erased device reached the network"
        );
    }

    #[test]
    fn the_unlock_token_is_kept_for_clear_passcode_but_not_printed() {
        let device = device();
        assert_eq!(device.unlock_token().len(), 64);
        let shown = format!("{:?}", device.state);
        assert!(shown.contains("Secret(redacted)"), "{shown}");
    }
}
