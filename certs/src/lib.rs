//! Cluster CA and node certificates for Dispotify.
//!
//! Nodes talk to each other over mutually authenticated QUIC. Every node has
//! a certificate signed by one cluster CA, and that certificate names the node
//! in exactly one URI subject alternative name, `spiffe://dispotify/node/<id>`.
//! A peer's node id is taken from that SAN ([`node_id_from_der`]) after TLS
//! has checked the chain to the CA.
//!
//! Files, as written by [`init_ca`] and [`issue_node_cert`]:
//!
//! ```text
//! CA_DIR/ca.pem     CA certificate (public, copied to every node)
//! CA_DIR/ca.key     CA private key, mode 0600 (keep it off the nodes)
//! NODE_DIR/node.pem node certificate alone, without the CA
//! NODE_DIR/node.key node private key, PKCS#8, mode 0600
//! NODE_DIR/ca.pem   copy of the CA certificate, the trust root for peers
//! ```
//!
//! The `dispotify-certgen` binary wraps these functions for operators, and
//! [`dev_certificates`] prepares a local development cluster.

mod dev;
mod error;
mod files;
mod identity;
mod inspect;
mod issue;
mod validity;

pub use dev::{dev_certificates, DEV_CA_DIR, DEV_DNS_NAME, DEV_IP_ADDR, DEV_RENEWAL_MARGIN};
pub use error::{CertError, NodeIdProblem};
pub use files::{read_pem_certs, read_pem_key};
pub use identity::{
    node_id_from_der, node_uri, validate_node_id, MAX_NODE_ID_LEN, NODE_URI_PREFIX,
};
pub use inspect::{inspect, CertInfo};
pub use issue::{
    init_ca, issue_node_cert, CaPaths, NodeCertRequest, NodePaths, CA_CERT_FILE, CA_COMMON_NAME,
    CA_KEY_FILE, NODE_CERT_FILE, NODE_KEY_FILE,
};
pub use validity::{
    Validity, CA_VALIDITY_DAYS, CLOCK_SKEW_ALLOWANCE, DEFAULT_NODE_VALIDITY_DAYS,
    MAX_NODE_VALIDITY_DAYS,
};
