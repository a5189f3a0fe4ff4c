//! A local APNs for tests: an HTTP/2 server over TLS (hyper + rustls) that requires a client
//! certificate issued by the test "Apple" CA, checks each push the way APNs does (path, topic,
//! push type, priority, expiration, body), answers any APNs error on request (per token or for
//! everything), can be taken down and brought back, records every push, and relays each accepted
//! push to the simulated device with that token, so devices wake only because they were pushed.
//!
//! `TestPki` makes the certificates with rcgen: the test CA, a push certificate whose subject UID
//! is `com.apple.mgmt.External.<uuid>`, one from another CA, and the server's certificate.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pomona::config::ServeArgs;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// The subject UID OID (0.9.2342.19200300.100.1.1) that carries the push topic.
const UID_OID: &[u64] = &[0, 9, 2342, 19200300, 100, 1, 1];

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Certificates for push tests, written to files in a temporary directory.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub topic: String,
    pub ca: Issued,
    pub push: Issued,
    /// A push certificate with the right topic from a CA the APNs server does not know.
    pub foreign_push: Issued,
    /// A client certificate without an MDM topic.
    pub not_mdm: Issued,
    pub server: Issued,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair, Issued) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("self-signed CA");
    let issued = Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    (cert, key, issued)
}

fn client_cert(uid: Option<&str>, issuer: &rcgen::Certificate, issuer_key: &KeyPair) -> Issued {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    if let Some(uid) = uid {
        params.distinguished_name.push(
            DnType::CustomDnType(UID_OID.to_vec()),
            DnValue::Utf8String(uid.to_string()),
        );
        params
            .distinguished_name
            .push(DnType::CommonName, format!("APSP:{uid}"));
    } else {
        params
            .distinguished_name
            .push(DnType::CommonName, "Some TLS client");
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params
        .signed_by(&key, issuer, issuer_key)
        .expect("client certificate");
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

impl TestPki {
    pub fn new() -> Self {
        let topic = format!(
            "com.apple.mgmt.External.{}",
            uuid::Uuid::new_v4().hyphenated()
        );
        let (ca_cert, ca_key, ca_issued) = ca("Test Apple Push CA");
        let (other_cert, other_key, _) = ca("Somebody else's CA");
        let push = client_cert(Some(&topic), &ca_cert, &ca_key);
        let foreign_push = client_cert(Some(&topic), &other_cert, &other_key);
        let not_mdm = client_cert(None, &ca_cert, &ca_key);
        let server_key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "test APNs");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = params
            .signed_by(&server_key, &ca_cert, &ca_key)
            .expect("server certificate");
        let pki = Self {
            dir: tempfile::tempdir().expect("temp dir"),
            topic,
            ca: ca_issued,
            push,
            foreign_push,
            not_mdm,
            server: Issued {
                cert_pem: server_cert.pem(),
                key_pem: server_key.serialize_pem(),
            },
        };
        for (name, text) in [
            ("ca.pem", &pki.ca.cert_pem),
            ("push.pem", &pki.push.cert_pem),
            ("push.key", &pki.push.key_pem),
            ("foreign.pem", &pki.foreign_push.cert_pem),
            ("foreign.key", &pki.foreign_push.key_pem),
            ("not-mdm.pem", &pki.not_mdm.cert_pem),
            ("not-mdm.key", &pki.not_mdm.key_pem),
        ] {
            std::fs::write(pki.path(name), text).expect("write test PKI file");
        }
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the push certificate and key as PKCS#12 with this password; returns its path.
    pub fn write_pkcs12(&self, issued: &Issued, password: &str, name: &str) -> PathBuf {
        let cert = openssl::x509::X509::from_pem(issued.cert_pem.as_bytes()).unwrap();
        let key = openssl::pkey::PKey::private_key_from_pem(issued.key_pem.as_bytes()).unwrap();
        let der = openssl::pkcs12::Pkcs12::builder()
            .name("MDM push")
            .pkey(&key)
            .cert(&cert)
            .build2(password)
            .unwrap()
            .to_der()
            .unwrap();
        let path = self.path(name);
        std::fs::write(&path, der).unwrap();
        path
    }
}

/// One push as the server received it.
#[derive(Debug, Clone)]
pub struct RecordedPush {
    pub token_hex: String,
    pub topic: Option<String>,
    pub push_magic: Option<String>,
    /// What the server answered.
    pub status: u16,
    pub reason: Option<String>,
}

#[derive(Default)]
struct Rules {
    all: Option<(u16, String)>,
    per_token: HashMap<String, (u16, String)>,
}

struct State {
    topic: String,
    rules: Mutex<Rules>,
    down: AtomicBool,
    /// Bumped to drop every open connection.
    generation: watch::Sender<u64>,
    pushes: Mutex<Vec<RecordedPush>>,
    devices: Mutex<HashMap<String, Arc<Notify>>>,
}

/// The local APNs server.
pub struct FakeApns {
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApns {
    fn drop(&mut self) {
        self.task.abort();
        self.state.generation.send_modify(|g| *g += 1);
    }
}

impl FakeApns {
    /// Starts on 127.0.0.1:0, trusting client certificates issued by the PKI's CA.
    pub async fn start(pki: &TestPki) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pki.ca.cert_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let chain = rustls_pemfile::certs(&mut pki.server.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut pki.server.key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let state = Arc::new(State {
            topic: pki.topic.clone(),
            rules: Mutex::default(),
            down: AtomicBool::new(false),
            generation: watch::channel(0).0,
            pushes: Mutex::default(),
            devices: Mutex::default(),
        });
        let task = tokio::spawn(accept_loop(listener, acceptor, state.clone()));
        Self { url, state, task }
    }

    /// ServeArgs that point a test server at this APNs with the PKI's push certificate and
    /// short intervals (coalescing 100 ms, retries from 100 ms, backoff of one hour so that only
    /// the pushes a test causes happen).
    pub fn configure(&self, pki: &TestPki, args: &mut ServeArgs) {
        args.push_cert = Some(pki.path("push.pem"));
        args.push_key = Some(pki.path("push.key"));
        args.push_endpoint = Some(self.url.clone());
        args.push_ca = Some(pki.path("ca.pem"));
        args.push_coalesce = Some("100ms".into());
        args.push_poll_interval = Some("50ms".into());
        args.push_retry_base = Some("100ms".into());
        args.push_retry_max = Some("400ms".into());
        args.push_backoff = Some("1h".into());
        args.push_timeout = Some("2s".into());
    }

    /// `pomona serve` flags that point a server process at this APNs server (the push
    /// certificate, its key, the endpoint and the CA to trust); timings are the caller's.
    pub fn serve_flags(&self, pki: &TestPki) -> Vec<String> {
        let path = |name: &str| pki.path(name).display().to_string();
        vec![
            "--push-cert".into(),
            path("push.pem"),
            "--push-key".into(),
            path("push.key"),
            "--push-endpoint".into(),
            self.url.clone(),
            "--push-ca".into(),
            path("ca.pem"),
        ]
    }

    /// The wake-up signal for the device with this token (created on first use).
    pub fn device(&self, token: &[u8]) -> Arc<Notify> {
        lock(&self.state.devices)
            .entry(hex::encode(token))
            .or_default()
            .clone()
    }

    /// Answer every push with this status and reason (`None`: accept again).
    pub fn fail_all(&self, answer: Option<(u16, &str)>) {
        lock(&self.state.rules).all = answer.map(|(s, r)| (s, r.to_string()));
    }

    /// Answer pushes for this token with this status and reason (`None`: accept again).
    pub fn fail_token(&self, token: &[u8], answer: Option<(u16, &str)>) {
        let mut rules = lock(&self.state.rules);
        match answer {
            Some((s, r)) => {
                rules
                    .per_token
                    .insert(hex::encode(token), (s, r.to_string()));
            }
            None => {
                rules.per_token.remove(&hex::encode(token));
            }
        }
    }

    /// Down: open connections are dropped and new ones are closed at once. Up: serving again.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
        if down {
            self.state.generation.send_modify(|g| *g += 1);
        }
    }

    pub fn pushes(&self) -> Vec<RecordedPush> {
        lock(&self.state.pushes).clone()
    }

    /// Pushes answered 200 for this token.
    pub fn accepted_for(&self, token: &[u8]) -> usize {
        let hex = hex::encode(token);
        self.pushes()
            .iter()
            .filter(|p| p.token_hex == hex && p.status == 200)
            .count()
    }

    pub fn received_for(&self, token: &[u8]) -> usize {
        let hex = hex::encode(token);
        self.pushes().iter().filter(|p| p.token_hex == hex).count()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        if state.down.load(Ordering::SeqCst) {
            drop(tcp);
            continue;
        }
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            // A client certificate the CA did not issue fails here, as at APNs.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut generation = state.generation.subscribe();
            let service_state = state.clone();
            let service = hyper::service::service_fn(move |request| {
                let state = service_state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&state, request).await) }
            });
            let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = connection => {}
                _ = generation.changed() => {}
            }
        });
    }
}

fn answer(status: u16, reason: Option<&str>) -> Response<Full<Bytes>> {
    let body = match reason {
        Some(reason) if status == 410 => format!(
            r#"{{"reason":"{reason}","timestamp":{}}}"#,
            pomona::vocab::clock::now_millis()
        ),
        Some(reason) => format!(r#"{{"reason":"{reason}"}}"#),
        None => String::new(),
    };
    Response::builder()
        .status(status)
        .header("apns-id", uuid::Uuid::new_v4().to_string())
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn handle(state: &State, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let topic = header("apns-topic");
    let push_type = header("apns-push-type");
    let priority = header("apns-priority");
    let expiration = header("apns-expiration");
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let token_hex = path.strip_prefix("/3/device/").unwrap_or("").to_string();
    let push_magic = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let object = v.as_object()?;
            // Exactly {"mdm": "<PushMagic>"}: no "aps", nothing else.
            (object.len() == 1)
                .then(|| object.get("mdm")?.as_str().map(str::to_string))
                .flatten()
        });
    let rejection = if method != hyper::Method::POST {
        Some((405, "MethodNotAllowed"))
    } else if token_hex.is_empty()
        || token_hex.len() % 2 != 0
        || !token_hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        Some((400, "BadDeviceToken"))
    } else if topic.as_deref() != Some(state.topic.as_str()) {
        Some((400, "BadTopic"))
    } else if push_type.as_deref() != Some("mdm") {
        Some((400, "InvalidPushType"))
    } else if priority.as_deref() != Some("10") {
        Some((400, "BadPriority"))
    } else if expiration.is_none_or(|e| e.parse::<u64>().is_err()) {
        Some((400, "BadExpirationDate"))
    } else if push_magic.is_none() {
        Some((400, "PayloadEmpty"))
    } else {
        None
    };
    let configured = {
        let rules = lock(&state.rules);
        rules
            .per_token
            .get(&token_hex)
            .or(rules.all.as_ref())
            .cloned()
    };
    let (status, reason) = match (rejection, configured) {
        (Some((s, r)), _) => (s, Some(r.to_string())),
        (None, Some((s, r))) => (s, Some(r)),
        (None, None) => (200, None),
    };
    lock(&state.pushes).push(RecordedPush {
        token_hex: token_hex.clone(),
        topic,
        push_magic,
        status,
        reason: reason.clone(),
    });
    if status == 200 {
        // Like APNs, keep the wake-up for a device not listening yet (APNs stores the latest
        // notification of an offline device and delivers it when it comes back).
        lock(&state.devices)
            .entry(token_hex.clone())
            .or_default()
            .notify_one();
    }
    answer(status, reason.as_deref())
}

/// Polls `check` every 20 ms until it returns Some, or panics after `limit` saying what was
/// awaited (a guard against hanging, not a timing assertion).
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("gave up waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Path helper for tests that build their own files.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
