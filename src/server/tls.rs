//! TLS with optional client certificates. The server asks every client for a certificate but
//! requires none at the TLS layer, so `/enroll` and `/scep` work before a device has one. Any
//! presented certificate must prove possession of its key (the handshake signature is
//! verified); whether it is a valid device identity is decided per request in `identity.rs`,
//! where a refusal can be a logged 403 instead of an opaque handshake failure.
//!
//! The acceptor hands the peer's leaf certificate and address to handlers as a `TlsPeer`
//! request extension.

use axum_server::accept::Accept;
use axum_server::tls_rustls::RustlsAcceptor;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Requests (never requires) a client certificate and checks only proof of possession.
#[derive(Debug)]
pub struct OptionalClientCert {
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl OptionalClientCert {
    /// `ca_subject_der`: the device CA's subject, sent as the acceptable-issuer hint so clients
    /// pick the right identity.
    pub fn new(ca_subject_der: Vec<u8>) -> Self {
        Self {
            hints: vec![DistinguishedName::from(ca_subject_der)],
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Chain, validity, revocation and binding are checked per request (identity.rs).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// DER of the client's leaf certificate, when it presented one.
    pub certificate: Option<Arc<Vec<u8>>>,
    pub address: Option<std::net::SocketAddr>,
}

/// A rustls acceptor that records the peer certificate and address on every request.
#[derive(Clone)]
pub struct PeerAcceptor {
    inner: RustlsAcceptor,
}

impl PeerAcceptor {
    pub fn new(inner: RustlsAcceptor) -> Self {
        Self { inner }
    }
}

impl<S: Send + 'static> Accept<tokio::net::TcpStream, S> for PeerAcceptor {
    type Stream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Service = WithPeer<S>;
    type Future =
        Pin<Box<dyn Future<Output = std::io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        let address = stream.peer_addr().ok();
        let handshake = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = handshake.await?;
            let certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| Arc::new(leaf.as_ref().to_vec()));
            let peer = TlsPeer {
                certificate,
                address,
            };
            Ok((
                stream,
                WithPeer {
                    inner: service,
                    peer,
                },
            ))
        })
    }
}

/// The per-connection service, adding `TlsPeer` to each request.
#[derive(Clone)]
pub struct WithPeer<S> {
    inner: S,
    peer: TlsPeer,
}

impl<S, B> tower_service::Service<axum::http::Request<B>> for WithPeer<S>
where
    S: tower_service::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.peer.clone());
        self.inner.call(request)
    }
}
