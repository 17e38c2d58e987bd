//! rustls configuration for mutual TLS between nodes.
//!
//! Both sides speak TLS 1.3 only, with ALPN [`ALPN_PROTOCOL`], and trust
//! exactly the cluster CA from the node's `ca.pem`:
//!
//! - the server requires a client certificate that chains to the CA
//!   (rustls's `WebPkiClientVerifier`) and carries a node id;
//! - the client checks the server's chain against the CA, validity period
//!   included, and then checks that the certificate's node id is the node it
//!   meant to dial. A valid certificate for another node is rejected.
//!
//! Session resumption is off in both directions, so every connection runs
//! the full certificate checks and a peer's identity always comes from the
//! certificate it presented on that connection.

use std::sync::{Arc, Mutex};

use quinn::crypto::rustls::NoInitialCipherSuite;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::SingleCertAndKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};

use crate::error::TransportError;
use crate::identity::TlsIdentity;

/// The ALPN protocol id of Dispotify's node-to-node protocol, version 1.
pub const ALPN_PROTOCOL: &[u8] = b"dispotify/1";

/// The TLS server name sent when dialing.
///
/// Identity is checked against the node id URI in the certificate, never
/// against this name, so it is the same for every peer.
pub(crate) const DIAL_SERVER_NAME: &str = "node.dispotify.invalid";

fn tls_config_error(component: &'static str) -> impl FnOnce(rustls::Error) -> TransportError {
    move |source| TransportError::TlsConfig {
        component,
        source: source.into(),
    }
}

/// Builds the quinn server configuration that accepts only clients with a
/// certificate from the cluster CA.
pub(crate) fn server_config(
    identity: &TlsIdentity,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig, TransportError> {
    let provider = identity.provider().clone();
    let webpki_verifier =
        WebPkiClientVerifier::builder_with_provider(identity.roots().clone(), provider.clone())
            .build()
            .map_err(|source| TransportError::TlsConfig {
                component: "client certificate verifier",
                source: source.into(),
            })?;
    let verifier = Arc::new(NodeClientVerifier {
        inner: webpki_verifier,
    });

    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_config_error("TLS 1.3 server configuration"))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(
            identity.certified_key().clone(),
        )));
    tls.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(NoServerSessionStorage {});

    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|source| {
        TransportError::TlsConfig {
            component: "QUIC server configuration",
            source: source.into(),
        }
    })?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport);
    Ok(config)
}

/// The client side of the TLS configuration, built once per endpoint and
/// specialised per dial with a verifier for the node being dialed.
pub(crate) struct ClientTls {
    base: rustls::ClientConfig,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    transport: Arc<quinn::TransportConfig>,
}

impl ClientTls {
    /// Builds the shared part of every dial's configuration and checks that
    /// quinn accepts it, so a configuration problem fails `Endpoint::bind`
    /// instead of the first dial.
    pub(crate) fn new(
        identity: &TlsIdentity,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<Self, TransportError> {
        let provider = identity.provider().clone();
        let roots = identity.roots().clone();
        let placeholder = Arc::new(NodeServerVerifier {
            expected_node_id: None,
            roots: roots.clone(),
            provider: provider.clone(),
            verdict: Arc::default(),
        });

        let mut base = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_config_error("TLS 1.3 client configuration"))?
            .dangerous()
            .with_custom_certificate_verifier(placeholder)
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
                identity.certified_key().clone(),
            )));
        base.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
        base.resumption = Resumption::disabled();
        base.enable_early_data = false;

        quinn::crypto::rustls::QuicClientConfig::try_from(base.clone()).map_err(|source| {
            TransportError::TlsConfig {
                component: "QUIC client configuration",
                source: source.into(),
            }
        })?;
        Ok(Self {
            base,
            roots,
            provider,
            transport,
        })
    }

    /// Returns a quinn client configuration for one dial to
    /// `expected_node_id`, or to any node with a certificate from the cluster
    /// CA when it is `None`.
    ///
    /// The returned [`DialVerdict`] records why the server's certificate was
    /// rejected, if it was, so the dial can report a precise error instead of
    /// a TLS alert code.
    pub(crate) fn for_peer(
        &self,
        expected_node_id: Option<&str>,
    ) -> Result<(quinn::ClientConfig, Arc<DialVerdict>), NoInitialCipherSuite> {
        let verdict = Arc::new(DialVerdict::default());
        let verifier = Arc::new(NodeServerVerifier {
            expected_node_id: expected_node_id.map(str::to_owned),
            roots: self.roots.clone(),
            provider: self.provider.clone(),
            verdict: verdict.clone(),
        });

        let mut tls = self.base.clone();
        tls.dangerous().set_certificate_verifier(verifier);
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(self.transport.clone());
        Ok((config, verdict))
    }
}

/// The reason the client rejected the server's certificate during one dial.
#[derive(Debug, Clone)]
pub(crate) enum ServerRejection {
    /// The chain or the node id SAN is invalid.
    Certificate(rustls::Error),
    /// The certificate is valid but names another node.
    IdentityMismatch { presented: String },
}

/// The outcome of the server certificate check of one dial, filled in by the
/// verifier and read by the dialer after a failed handshake.
#[derive(Debug, Default)]
pub(crate) struct DialVerdict {
    rejection: Mutex<Option<ServerRejection>>,
}

impl DialVerdict {
    fn record(&self, rejection: ServerRejection) {
        // A poisoned lock only means another thread panicked while holding
        // it; the stored value is a plain enum and still usable.
        let mut slot = self.rejection.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(rejection);
    }

    pub(crate) fn rejection(&self) -> Option<ServerRejection> {
        self.rejection
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Verifies a server certificate against the cluster CA and checks that it
/// names the node being dialed.
#[derive(Debug)]
struct NodeServerVerifier {
    /// The node being dialed, or `None` to accept any node id (a dial to a
    /// seed address whose node is not known yet).
    expected_node_id: Option<String>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    verdict: Arc<DialVerdict>,
}

impl NodeServerVerifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), ServerRejection> {
        let parsed =
            ParsedCertificate::try_from(end_entity).map_err(ServerRejection::Certificate)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )
        .map_err(ServerRejection::Certificate)?;

        let presented = dispotify_certs::node_id_from_der(end_entity)
            .map_err(|error| ServerRejection::Certificate(node_id_error(error)))?;
        match &self.expected_node_id {
            Some(expected) if presented != *expected => {
                Err(ServerRejection::IdentityMismatch { presented })
            }
            _ => Ok(()),
        }
    }
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.check(end_entity, intermediates, now) {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            Err(rejection) => {
                let error = match &rejection {
                    ServerRejection::Certificate(error) => error.clone(),
                    ServerRejection::IdentityMismatch { .. } => {
                        rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
                    }
                };
                self.verdict.record(rejection);
                Err(error)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// rustls's client certificate verifier, plus the check that the certificate
/// carries a node id, so a client without one fails the handshake.
#[derive(Debug)]
struct NodeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for NodeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        dispotify_certs::node_id_from_der(end_entity).map_err(node_id_error)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn node_id_error(error: dispotify_certs::CertError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

/// Returns the node id of the certificate a connected peer presented.
///
/// The TLS handshake already verified the chain and that the certificate
/// carries a node id, so a failure here means the connection was not made
/// with this crate's TLS configuration.
pub(crate) fn peer_node_id(connection: &quinn::Connection) -> Option<String> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let end_entity = chain.first()?;
    dispotify_certs::node_id_from_der(end_entity).ok()
}
