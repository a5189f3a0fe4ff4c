//! The APNs client: one long-lived HTTP/2 connection over TLS (hyper + rustls), authenticated
//! with the MDM push certificate, multiplexing many pushes as concurrent streams. Reconnects when
//! the connection is closed (GOAWAY, errors); bounds in-flight pushes and the time each may take.
//!
//! Owns the wire format of one push (`POST /3/device/<hex token>`, headers, `{"mdm": …}` body)
//! and the classification of APNs answers. Must not decide when or whom to push (that is the
//! scheduler's job) and never logs the push magic.

use super::certificate::PushCertificate;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore};

pub const PRODUCTION_URL: &str = "https://api.push.apple.com";
pub const SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";

/// How long APNs keeps an undelivered push (only the last one per device is kept anyway).
const EXPIRATION_SECS: u64 = 86_400;

/// Where to send pushes and how hard.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Base URL: `production`, `sandbox` or any https:// URL (tests, proxies).
    pub endpoint: String,
    /// Extra CA certificates (DER) to trust for the endpoint, besides the public roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Pushes in flight at once on the connection.
    pub concurrency: usize,
    /// Time allowed for one push, connecting included.
    pub timeout: Duration,
}

/// Why an APNs client cannot be set up; each message names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientSetupError {
    #[error("{url:?} is not a URL: {reason}")]
    NotAUrl { url: String, reason: String },
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("{0:?} must be production, sandbox or an https:// URL")]
    UnknownEndpoint(String),
    #[error("push endpoint host {host:?}: {reason}")]
    BadHost { host: String, reason: String },
    #[error("extra push CA certificate: {0}")]
    BadExtraRoot(String),
    #[error("TLS 1.2 is unavailable: {0}")]
    Tls(String),
    #[error("the push certificate cannot be used for TLS: {0}")]
    UnusableCertificate(String),
}

/// Resolves `production` / `sandbox` / an https URL to a base URL.
pub fn endpoint_url(endpoint: &str) -> Result<String, ClientSetupError> {
    match endpoint {
        "production" => Ok(PRODUCTION_URL.into()),
        "sandbox" => Ok(SANDBOX_URL.into()),
        url if url.starts_with("https://") => {
            let uri: hyper::Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| {
                ClientSetupError::NotAUrl {
                    url: url.to_string(),
                    reason: e.to_string(),
                }
            })?;
            if uri.host().is_none_or(str::is_empty) {
                return Err(ClientSetupError::NoHost(url.to_string()));
            }
            Ok(url.trim_end_matches('/').to_string())
        }
        other => Err(ClientSetupError::UnknownEndpoint(other.to_string())),
    }
}

/// Why a push could not be handed to APNs. None of these mean the device is gone: the push is
/// retried later.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PushError {
    #[error(
        "APNs at {endpoint} rejected the push certificate in the TLS handshake ({detail}); use the \
         MDM push certificate issued by the Apple Push Certificates Portal, unexpired and for this environment"
    )]
    CertificateRejected { endpoint: String, detail: String },
    #[error("the APNs server at {endpoint} is not trusted ({detail}); for a test server pass its CA with --push-ca")]
    ServerNotTrusted { endpoint: String, detail: String },
    #[error("cannot connect to APNs at {endpoint}: {detail}")]
    Connect { endpoint: String, detail: String },
    #[error("APNs at {endpoint} did not answer within {after:?}")]
    Timeout { endpoint: String, after: Duration },
    #[error("connection to APNs at {endpoint} failed: {detail}")]
    Connection { endpoint: String, detail: String },
}

/// APNs' answer to one push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsResponse {
    pub status: u16,
    pub apns_id: Option<String>,
    /// `reason` from the error JSON (`Unregistered`, `BadDeviceToken`, `TooManyRequests`, …).
    pub reason: Option<String>,
    /// `timestamp` (Unix ms) from a 410: the token is invalid since then.
    pub timestamp: Option<i64>,
}

/// What an answer means for the device's push state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Accepted for delivery (200 is not proof of delivery).
    Accepted,
    /// The token will never work again: stop until the next TokenUpdate.
    TokenInvalid,
    /// Throttled or APNs trouble: retry with backoff.
    Transient,
    /// Our request or certificate is wrong (topic, certificate, payload): retry with backoff, and
    /// an operator must fix the configuration.
    Misconfigured,
}

impl ApnsResponse {
    pub fn disposition(&self) -> Disposition {
        match (self.status, self.reason.as_deref()) {
            (200, _) => Disposition::Accepted,
            (410, _) => Disposition::TokenInvalid,
            (400, Some("BadDeviceToken" | "DeviceTokenNotForTopic")) => Disposition::TokenInvalid,
            (429, _) | (500..=599, _) => Disposition::Transient,
            _ => Disposition::Misconfigured,
        }
    }

    /// Short text for the device's `last_push_result`: `accepted` or `410 Unregistered`.
    pub fn summary(&self) -> String {
        match (self.status, &self.reason) {
            (200, _) => "accepted".into(),
            (status, Some(reason)) => format!("{status} {reason}"),
            (status, None) => format!("{status}"),
        }
    }
}

struct Connection {
    sender: http2::SendRequest<Full<Bytes>>,
    /// Finishes when the connection ends, with the reason if it failed.
    ended: tokio::task::JoinHandle<Option<PushError>>,
}

/// The APNs HTTP/2 client. Cheap to share behind an `Arc`.
pub struct ApnsClient {
    base_url: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
    topic: String,
    connection: Mutex<Option<Connection>>,
    in_flight: Semaphore,
    timeout: Duration,
}

impl ApnsClient {
    pub fn new(
        certificate: &PushCertificate,
        settings: &ClientSettings,
    ) -> Result<Self, ClientSetupError> {
        let base_url = endpoint_url(&settings.endpoint)?;
        let uri: hyper::Uri = base_url
            .parse()
            .map_err(
                |e: hyper::http::uri::InvalidUri| ClientSetupError::NotAUrl {
                    url: base_url.clone(),
                    reason: e.to_string(),
                },
            )?;
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let server_name =
            ServerName::try_from(host.clone()).map_err(|e| ClientSetupError::BadHost {
                host: host.clone(),
                reason: e.to_string(),
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for root in &settings.extra_roots {
            roots
                .add(root.clone())
                .map_err(|e| ClientSetupError::BadExtraRoot(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // TLS 1.2, which APNs supports: there the server judges our client certificate inside
        // the handshake, so a rejected push certificate is reported as such. With TLS 1.3 the
        // rejection arrives after the handshake and often surfaces only as a broken pipe.
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .map_err(|e| ClientSetupError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certificate.chain.clone(), certificate.private_key())
            .map_err(|e| ClientSetupError::UnusableCertificate(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            base_url,
            host,
            port,
            server_name,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            topic: certificate.topic.clone(),
            connection: Mutex::new(None),
            in_flight: Semaphore::new(settings.concurrency.max(1)),
            timeout: settings.timeout,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.base_url
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends one MDM push. A request that fails on a connection opened earlier is retried once
    /// on a fresh connection (the old one may have been closed by a GOAWAY).
    pub async fn push(&self, token: &[u8], push_magic: &str) -> Result<ApnsResponse, PushError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let attempt = async {
            match self.push_once(token, push_magic).await {
                Ok(response) => Ok(response),
                Err(Failure { error, reused }) if reused => {
                    tracing::debug!(error = %error, "APNs connection was stale; retrying on a new one");
                    self.push_once(token, push_magic)
                        .await
                        .map_err(|failure| failure.error)
                }
                Err(failure) => Err(failure.error),
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => {
                // A connection that stopped answering is not reused.
                self.connection.lock().await.take();
                Err(PushError::Timeout {
                    endpoint: self.base_url.clone(),
                    after: self.timeout,
                })
            }
        }
    }

    async fn push_once(&self, token: &[u8], push_magic: &str) -> Result<ApnsResponse, Failure> {
        let (mut sender, reused) = self.sender().await.map_err(|error| Failure {
            error,
            reused: false,
        })?;
        let request = self.request(token, push_magic);
        let sent = match sender.ready().await {
            Ok(()) => sender.send_request(request).await,
            Err(e) => Err(e),
        };
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                let error = self.connection_failed(&e).await;
                return Err(Failure { error, reused });
            }
        };
        let status = response.status().as_u16();
        let apns_id = response
            .headers()
            .get("apns-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match response.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                let error = self.connection_failed(&e).await;
                return Err(Failure { error, reused });
            }
        };
        let (reason, timestamp) = parse_error_body(&body);
        Ok(ApnsResponse {
            status,
            apns_id,
            reason,
            timestamp,
        })
    }

    fn request(&self, token: &[u8], push_magic: &str) -> hyper::Request<Full<Bytes>> {
        let expiration = crate::vocab::clock::now_millis() / 1000 + EXPIRATION_SECS as i64;
        let body = serde_json::to_vec(&serde_json::json!({ "mdm": push_magic }))
            .expect("a JSON object always serialises");
        hyper::Request::post(format!("{}/3/device/{}", self.base_url, hex::encode(token)))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "mdm")
            .header("apns-priority", "10")
            .header("apns-expiration", expiration.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("the request parts are valid")
    }

    /// The shared connection's sender, connecting first when there is none or it has closed.
    /// The flag says whether the connection existed before this call.
    async fn sender(&self) -> Result<(http2::SendRequest<Full<Bytes>>, bool), PushError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            if !connection.sender.is_closed() {
                return Ok((connection.sender.clone(), true));
            }
        }
        let connection = self.connect().await?;
        let sender = connection.sender.clone();
        *slot = Some(connection);
        Ok((sender, false))
    }

    async fn connect(&self) -> Result<Connection, PushError> {
        let endpoint = || self.base_url.clone();
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| PushError::Connect {
                endpoint: endpoint(),
                detail: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| classify(&self.base_url, &e))?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(60))
            .keep_alive_timeout(Duration::from_secs(20))
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| classify(&self.base_url, &e))?;
        let base_url = self.base_url.clone();
        let ended = tokio::spawn(async move {
            match connection.await {
                Ok(()) => None,
                Err(e) => {
                    let error = classify(&base_url, &e);
                    tracing::warn!(error = %error, "APNs connection ended");
                    Some(error)
                }
            }
        });
        tracing::info!(endpoint = %self.base_url, "connected to APNs");
        Ok(Connection { sender, ended })
    }

    /// Drops the current connection and explains why it failed, preferring the connection's own
    /// reason (a TLS alert arrives there, not on the request).
    async fn connection_failed(&self, request_error: &hyper::Error) -> PushError {
        let taken = self.connection.lock().await.take();
        let request_failure = classify(&self.base_url, request_error);
        if !matches!(request_failure, PushError::Connection { .. }) {
            return request_failure;
        }
        if let Some(connection) = taken {
            if let Ok(Ok(Some(reason))) =
                tokio::time::timeout(Duration::from_secs(1), connection.ended).await
            {
                return reason;
            }
        }
        request_failure
    }
}

struct Failure {
    error: PushError,
    reused: bool,
}

/// `reason` and `timestamp` from an APNs error body; empty or foreign bodies give nothing.
pub fn parse_error_body(body: &[u8]) -> (Option<String>, Option<i64>) {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        reason: Option<String>,
        timestamp: Option<i64>,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => (parsed.reason, parsed.timestamp),
        Err(_) => (None, None),
    }
}

/// Turns a transport error into a `PushError`, recognising TLS alerts about our certificate.
fn classify(endpoint: &str, error: &(dyn std::error::Error + 'static)) -> PushError {
    let endpoint = endpoint.to_string();
    match tls_cause(error) {
        Some(rustls::Error::AlertReceived(alert)) if certificate_alert(&alert) => {
            PushError::CertificateRejected {
                endpoint,
                detail: format!("TLS alert {alert:?}"),
            }
        }
        Some(rustls::Error::InvalidCertificate(reason)) => PushError::ServerNotTrusted {
            endpoint,
            detail: format!("{reason:?}"),
        },
        Some(other) => PushError::Connection {
            endpoint,
            detail: format!("TLS: {other}"),
        },
        // h2 keeps I/O errors in a form that cannot be downcast: recognise the alert by name.
        None => {
            let detail = chain(error);
            match alert_named_in(&detail) {
                Some(alert) => PushError::CertificateRejected {
                    endpoint,
                    detail: format!("TLS alert {alert}"),
                },
                None => PushError::Connection { endpoint, detail },
            }
        }
    }
}

/// The certificate-related TLS alert a rustls error message names, if any.
fn alert_named_in(text: &str) -> Option<&'static str> {
    const ALERTS: &[&str] = &[
        "BadCertificate",
        "UnknownCA",
        "CertificateRequired",
        "CertificateUnknown",
        "CertificateRevoked",
        "CertificateExpired",
        "UnsupportedCertificate",
        "AccessDenied",
    ];
    let after = text.split("received fatal alert: ").nth(1)?;
    ALERTS
        .iter()
        .copied()
        .find(|alert| after.starts_with(alert))
}

fn certificate_alert(alert: &rustls::AlertDescription) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        alert,
        A::BadCertificate
            | A::UnknownCA
            | A::CertificateRequired
            | A::CertificateUnknown
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::UnsupportedCertificate
            | A::AccessDenied
    )
}

fn tls_cause(error: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        // io::Error::source() skips the wrapped error itself, so look inside explicitly.
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(tls.clone());
            }
        }
        current = e.source();
    }
    None
}

fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_resolve_to_apple_hosts_or_the_given_url() {
        assert_eq!(endpoint_url("production").unwrap(), PRODUCTION_URL);
        assert_eq!(endpoint_url("sandbox").unwrap(), SANDBOX_URL);
        assert_eq!(
            endpoint_url("https://127.0.0.1:9443/").unwrap(),
            "https://127.0.0.1:9443"
        );
        assert!(endpoint_url("http://api.push.apple.com").is_err());
        assert!(endpoint_url("staging").is_err());
    }

    #[test]
    fn apns_answers_are_classified() {
        let answer = |status, reason: Option<&str>| ApnsResponse {
            status,
            apns_id: None,
            reason: reason.map(str::to_string),
            timestamp: None,
        };
        assert_eq!(answer(200, None).disposition(), Disposition::Accepted);
        assert_eq!(
            answer(410, Some("Unregistered")).disposition(),
            Disposition::TokenInvalid
        );
        assert_eq!(
            answer(400, Some("BadDeviceToken")).disposition(),
            Disposition::TokenInvalid
        );
        assert_eq!(
            answer(429, Some("TooManyRequests")).disposition(),
            Disposition::Transient
        );
        assert_eq!(
            answer(503, Some("ServiceUnavailable")).disposition(),
            Disposition::Transient
        );
        assert_eq!(
            answer(400, Some("BadTopic")).disposition(),
            Disposition::Misconfigured
        );
        assert_eq!(
            answer(410, Some("Unregistered")).summary(),
            "410 Unregistered"
        );
    }

    #[test]
    fn certificate_alerts_are_recognised_in_messages() {
        assert_eq!(
            alert_named_in("connection error: received fatal alert: UnknownCA"),
            Some("UnknownCA")
        );
        assert_eq!(alert_named_in("received fatal alert: DecodeError"), None);
        assert_eq!(alert_named_in("connection refused"), None);
    }

    #[test]
    fn error_bodies_yield_reason_and_timestamp() {
        assert_eq!(
            parse_error_body(br#"{"reason":"Unregistered","timestamp":1700000000000}"#),
            (Some("Unregistered".into()), Some(1_700_000_000_000))
        );
        assert_eq!(parse_error_body(b""), (None, None));
    }
}
