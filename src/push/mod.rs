//! APNs push: wakes devices so they fetch their queued commands. `certificate` loads the MDM
//! push certificate and its topic, `client` speaks HTTP/2 to APNs, `scheduler` decides when each
//! device is pushed (coalescing, backoff, token invalidation, circuit breaker) from the rows the
//! store keeps, so that pending pushes survive restarts. `cli` is `pomona push`.
//!
//! Owns how and when devices are woken; must not decide what devices are sent (the command queue
//! and the reconciler do). It reads and writes only the store's `PushStore` area, and never logs
//! push magic, tokens or key material.

pub mod certificate;
pub mod cli;
pub mod client;
pub mod scheduler;

use crate::store::{PushOutcome, PushStore, StoreError};
use certificate::PushCertificate;
use client::{ApnsClient, ApnsResponse, ClientSettings, Disposition, PushError};
use scheduler::{Breaker, ScheduleSettings};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Where the push certificate comes from.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    /// PEM certificate (chain) and key; with no key file the key is in the certificate file.
    Pem { cert: PathBuf, key: Option<PathBuf> },
    /// PKCS#12 with the password in a file (a mounted Secret).
    Pkcs12 {
        path: PathBuf,
        password_file: PathBuf,
    },
}

/// Validated push configuration.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// None: push is off (devices are only reached when they poll).
    pub certificate: Option<CertificateSource>,
    /// `production`, `sandbox` or an https:// URL.
    pub endpoint: String,
    /// Extra PEM CA file trusted for the endpoint (test servers, proxies).
    pub extra_ca: Option<PathBuf>,
    pub concurrency: usize,
    pub timeout: Duration,
    pub schedule: ScheduleSettings,
}

impl Default for PushSettings {
    fn default() -> Self {
        Self {
            certificate: None,
            endpoint: "production".into(),
            extra_ca: None,
            concurrency: 200,
            timeout: Duration::from_secs(15),
            schedule: ScheduleSettings::default(),
        }
    }
}

/// Why push could not start. Messages name the file and the fix; never a secret.
#[derive(Debug, thiserror::Error)]
pub enum PushSetupError {
    #[error(transparent)]
    Certificate(#[from] certificate::CertificateError),
    #[error("cannot read the PKCS#12 password file {0}: {1}")]
    PasswordFile(String, String),
    #[error("push CA file {0}: {1}")]
    ExtraCa(String, String),
    #[error("APNs client: {0}")]
    Client(#[from] client::ClientSetupError),
}

/// Why an administrator's push was not sent.
#[derive(Debug, thiserror::Error)]
pub enum AdminPushError {
    #[error(
        "push is not configured on this server (set --push-cert and --push-key, or --push-p12)"
    )]
    Disabled,
    #[error("device {0} cannot be pushed yet: it has sent no TokenUpdate (or is checked out)")]
    NoToken(String),
    #[error("device {0}'s push token was reported invalid by APNs; it is pushed again after its next TokenUpdate")]
    TokenInvalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Apns(#[from] PushError),
}

/// Push counters for `/metrics`.
#[derive(Default)]
pub struct PushMetrics {
    results: Mutex<BTreeMap<&'static str, u64>>,
}

impl PushMetrics {
    pub(crate) fn count(&self, result: &'static str) {
        *self
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(result)
            .or_default() += 1;
    }

    pub fn results(&self) -> BTreeMap<&'static str, u64> {
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The push service: shared by the admin API (wake, push now) and the scheduler task.
pub struct Push {
    pub(crate) store: Arc<dyn PushStore>,
    pub(crate) client: Option<Arc<ApnsClient>>,
    certificate: Option<PushCertificate>,
    pub(crate) schedule: ScheduleSettings,
    pub(crate) wake: Notify,
    pub metrics: PushMetrics,
    pub(crate) breaker: Mutex<Breaker>,
    /// When the wake-ups requested in this process come due (their coalescing window ends),
    /// earliest first: the scheduler claims then rather than at its next poll.
    pub(crate) due_hints: Mutex<std::collections::BinaryHeap<std::cmp::Reverse<i64>>>,
    /// Where the scheduler runs (`spawn_scheduler`).
    pub(crate) lane: std::sync::OnceLock<crate::lane::Lane>,
}

impl Push {
    /// Loads the certificate (if configured) and builds the client. Nothing connects yet.
    pub fn new(
        store: Arc<dyn PushStore>,
        settings: &PushSettings,
    ) -> Result<Arc<Self>, PushSetupError> {
        let certificate = match &settings.certificate {
            None => None,
            Some(CertificateSource::Pem { cert, key }) => {
                Some(PushCertificate::from_pem_files(cert, key.as_deref())?)
            }
            Some(CertificateSource::Pkcs12 {
                path,
                password_file,
            }) => {
                let password = std::fs::read_to_string(password_file).map_err(|e| {
                    PushSetupError::PasswordFile(password_file.display().to_string(), e.to_string())
                })?;
                // A trailing newline from `echo pw > file` or a Secret is not part of the password.
                let password = password.trim_end_matches(['\r', '\n']);
                Some(PushCertificate::from_pkcs12_file(path, password)?)
            }
        };
        let client = match &certificate {
            None => None,
            Some(cert) => {
                let extra_roots = match &settings.extra_ca {
                    None => Vec::new(),
                    Some(path) => read_ca_file(path)?,
                };
                let client_settings = ClientSettings {
                    endpoint: settings.endpoint.clone(),
                    extra_roots,
                    concurrency: settings.concurrency,
                    timeout: settings.timeout,
                };
                Some(Arc::new(ApnsClient::new(cert, &client_settings)?))
            }
        };
        let mut schedule = settings.schedule.clone();
        // A claimed push must outlive the time one push may take, with margin.
        schedule.lease = settings.timeout.saturating_mul(2) + Duration::from_secs(1);
        Ok(Arc::new(Self {
            client,
            certificate,
            schedule,
            wake: Notify::new(),
            metrics: PushMetrics::default(),
            breaker: Mutex::new(Breaker::default()),
            due_hints: Mutex::default(),
            lane: std::sync::OnceLock::new(),
            store,
        }))
    }

    pub fn enabled(&self) -> bool {
        self.client.is_some()
    }

    /// The APNs topic of the push certificate.
    pub fn topic(&self) -> Option<&str> {
        self.certificate.as_ref().map(|c| c.topic.as_str())
    }

    /// The push certificate's not-after, Unix seconds.
    pub fn certificate_not_after(&self) -> Option<i64> {
        self.certificate.as_ref().map(|c| c.not_after)
    }

    pub fn endpoint(&self) -> Option<&str> {
        self.client.as_ref().map(|c| c.endpoint())
    }

    /// Commands were queued for this device: push it once the coalescing window has passed
    /// (persisted first, so a restart does not lose the wake-up).
    pub async fn wake(&self, device_id: &str) -> Result<(), StoreError> {
        if !self.enabled() {
            // Nothing would send it; if push is configured later, the start-up sweep pushes
            // every device with queued commands. Skipping saves a write per enqueue.
            return Ok(());
        }
        let at = crate::vocab::clock::now_millis() + self.schedule.coalesce.as_millis() as i64;
        // The store batches requests arriving together (a policy change wakes thousands of
        // devices at once) into one transaction.
        self.store.request_push(device_id, at).await?;
        self.due_hints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(std::cmp::Reverse(at));
        self.wake.notify_one();
        Ok(())
    }

    /// Pushes one device now (administrator's request) and records the outcome.
    pub async fn push_now(&self, device_id: &str) -> Result<ApnsResponse, AdminPushError> {
        let client = self.client.as_ref().ok_or(AdminPushError::Disabled)?;
        if let Some(status) = self.store.push_status(device_id).await? {
            if status.token_invalid_at.is_some() {
                return Err(AdminPushError::TokenInvalid(device_id.to_string()));
            }
        }
        let credentials = self
            .store
            .push_credentials(device_id)
            .await?
            .ok_or_else(|| AdminPushError::NoToken(device_id.to_string()))?;
        let sent = client
            .push(&credentials.token, &credentials.push_magic)
            .await;
        let now = crate::vocab::clock::now_millis();
        let (result, accepted, token_invalid) = match &sent {
            Ok(response) => {
                let disposition = response.disposition();
                (
                    response.summary(),
                    disposition == Disposition::Accepted,
                    disposition == Disposition::TokenInvalid,
                )
            }
            Err(e) => (format!("failed: {e}"), false, false),
        };
        self.metrics.count(scheduler::metric_label(&sent));
        self.store
            .record_push(&PushOutcome {
                device_id: device_id.to_string(),
                at: now,
                accepted,
                result: Some(result),
                token_invalid,
                schedule: None,
            })
            .await?;
        Ok(sent?)
    }

    /// Logs the certificate's topic and expiry, and loudly any enrolled devices of another
    /// topic (a replaced rather than renewed push certificate orphans them).
    pub async fn report_at_start(&self) {
        let Some(cert) = &self.certificate else {
            tracing::warn!("no push certificate configured: devices are not woken by APNs and only check in when they poll");
            return;
        };
        tracing::info!(
            topic = %cert.topic,
            not_after = %rfc3339_seconds(cert.not_after),
            endpoint = self.endpoint().unwrap_or_default(),
            "push certificate loaded"
        );
        self.warn_about_expiry();
        match self.store.enrolled_topics().await {
            Ok(topics) => {
                for (topic, devices) in topics.iter().filter(|(t, _)| *t != cert.topic) {
                    tracing::error!(
                        enrolled_topic = %topic,
                        devices,
                        certificate_topic = %cert.topic,
                        "PUSH TOPIC MISMATCH: these devices enrolled with another push topic and cannot be \
                         woken with this certificate. Renew the original push certificate in the Apple Push \
                         Certificates Portal instead of replacing it, or re-enroll the devices"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not compare enrolled topics with the push certificate")
            }
        }
        match self
            .store
            .request_pushes_for_queued(crate::vocab::clock::now_millis())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(devices = n, "devices with queued commands will be pushed"),
            Err(e) => tracing::warn!(error = %e, "could not schedule pushes for queued commands"),
        }
    }

    /// Warns from 30 days before the certificate expires; errors once it has.
    pub fn warn_about_expiry(&self) {
        let Some(cert) = &self.certificate else {
            return;
        };
        let days = cert.days_left(crate::vocab::clock::now_millis() / 1000);
        if days < 0 {
            tracing::error!(topic = %cert.topic, "the push certificate has EXPIRED: APNs refuses it; renew it in the Apple Push Certificates Portal (keep the same topic)");
        } else if days <= 30 {
            tracing::warn!(topic = %cert.topic, days_left = days, "the push certificate expires soon: renew it in the Apple Push Certificates Portal (keep the same topic)");
        }
    }

    /// Prometheus lines for push.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str("# HELP pomona_push_total Pushes to APNs by outcome.\n");
        out.push_str("# TYPE pomona_push_total counter\n");
        for (result, n) in self.metrics.results() {
            let _ = writeln!(out, "pomona_push_total{{result=\"{result}\"}} {n}");
        }
        if let Some(cert) = &self.certificate {
            out.push_str("# HELP pomona_push_certificate_not_after_seconds Push certificate expiry (Unix seconds).\n");
            out.push_str("# TYPE pomona_push_certificate_not_after_seconds gauge\n");
            let _ = writeln!(
                out,
                "pomona_push_certificate_not_after_seconds{{topic=\"{}\"}} {}",
                cert.topic, cert.not_after
            );
        }
        let open = self
            .breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_open(crate::vocab::clock::now_millis());
        out.push_str("# HELP pomona_push_circuit_open 1 while pushes are paused because APNs fails broadly.\n");
        out.push_str("# TYPE pomona_push_circuit_open gauge\n");
        let _ = writeln!(out, "pomona_push_circuit_open {}", u8::from(open));
    }
}

fn read_ca_file(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, PushSetupError> {
    let shown = path.display().to_string();
    let pem =
        std::fs::read(path).map_err(|e| PushSetupError::ExtraCa(shown.clone(), e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PushSetupError::ExtraCa(shown.clone(), e.to_string()))?;
    if certs.is_empty() {
        return Err(PushSetupError::ExtraCa(
            shown,
            "no PEM certificate in it".into(),
        ));
    }
    Ok(certs)
}

pub use crate::pki::ca::rfc3339_seconds;
