//! A node's own certificate, private key and cluster CA, loaded from disk.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use dispotify_certs::{CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use crate::error::TransportError;

/// The TLS material of one node: its certificate chain and key, the node id
/// that certificate names, and the cluster CA that peers must chain to.
///
/// Cloning is cheap: the parts are shared.
#[derive(Clone)]
pub struct TlsIdentity {
    node_id: String,
    certified_key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("node_id", &self.node_id)
            .field("chain_len", &self.certified_key.cert.len())
            .field("ca_certs", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Loads `node.pem`, `node.key` and `ca.pem` from `certs_dir`, as written
    /// by `dispotify_certs::issue_node_cert`.
    ///
    /// Fails when a file is missing or malformed, when the key does not
    /// belong to the certificate, or when the certificate's node id (its
    /// `spiffe://dispotify/node/<id>` URI SAN) is not `expected_node_id`.
    ///
    /// A certificate that does not verify against `ca.pem` right now (expired,
    /// not yet valid, or from another CA) still loads, with a warning: peers
    /// reject it during the handshake, and the node can start and report it.
    pub fn load(certs_dir: &Path, expected_node_id: &str) -> Result<Self, TransportError> {
        let load_error = |source| TransportError::LoadIdentity {
            certs_dir: certs_dir.to_path_buf(),
            source,
        };
        let cert_path = certs_dir.join(NODE_CERT_FILE);
        let chain = dispotify_certs::read_pem_certs(&cert_path).map_err(load_error)?;
        let key =
            dispotify_certs::read_pem_key(&certs_dir.join(NODE_KEY_FILE)).map_err(load_error)?;
        let ca_certs =
            dispotify_certs::read_pem_certs(&certs_dir.join(CA_CERT_FILE)).map_err(load_error)?;

        let Some(end_entity) = chain.first() else {
            return Err(TransportError::TlsConfig {
                component: "certificate chain",
                source: format!("{} contains no certificate", cert_path.display()).into(),
            });
        };
        let presented = dispotify_certs::node_id_from_der(end_entity).map_err(load_error)?;
        if presented != expected_node_id {
            return Err(TransportError::LocalIdentityMismatch {
                path: cert_path,
                expected: expected_node_id.to_owned(),
                presented,
            });
        }

        let identity = Self::from_der(presented, chain, key, ca_certs)?;
        if let Err(error) = identity.verify_own_certificate() {
            tracing::warn!(
                node_id = %identity.node_id,
                cert_path = %cert_path.display(),
                %error,
                "own certificate does not verify against the cluster CA; peers will reject it"
            );
        }
        Ok(identity)
    }

    fn from_der(
        node_id: String,
        chain: Vec<Vec<u8>>,
        pkcs8_key: Vec<u8>,
        ca_certs: Vec<Vec<u8>>,
    ) -> Result<Self, TransportError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let mut roots = RootCertStore::empty();
        for ca_cert in ca_certs {
            roots.add(CertificateDer::from(ca_cert)).map_err(|source| {
                TransportError::TlsConfig {
                    component: "trust store from the CA certificate",
                    source: source.into(),
                }
            })?;
        }

        let chain = chain.into_iter().map(CertificateDer::from).collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8_key));
        let certified_key = CertifiedKey::from_der(chain, key, &provider).map_err(|source| {
            TransportError::TlsConfig {
                component: "signing key from the node certificate and key",
                source: source.into(),
            }
        })?;

        Ok(Self {
            node_id,
            certified_key: Arc::new(certified_key),
            roots: Arc::new(roots),
            provider,
        })
    }

    /// Returns the node id named by this node's certificate.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub(crate) fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }

    pub(crate) fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    pub(crate) fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// Verifies this node's certificate chain against the cluster CA at the
    /// current time, as a peer would.
    fn verify_own_certificate(&self) -> Result<(), rustls::Error> {
        let chain = &self.certified_key.cert;
        let (end_entity, intermediates) = chain
            .split_first()
            .ok_or(rustls::Error::NoCertificatesPresented)?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            UnixTime::now(),
            self.provider.signature_verification_algorithms.all,
        )
    }
}
