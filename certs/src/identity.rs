//! Node ids and how they are bound to certificates.
//!
//! A node certificate names its node in exactly one URI subject alternative
//! name, `spiffe://dispotify/node/<id>`. Peers learn each other's id from that
//! SAN only, never from the common name, so a certificate with no node URI, or
//! with more than one URI, is rejected as a node certificate.

use std::path::Path;

use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::error::{CertError, NodeIdProblem};

/// The URI prefix that, followed by a node id, forms a node's identity SAN.
pub const NODE_URI_PREFIX: &str = "spiffe://dispotify/node/";

/// Maximum length of a node id in bytes.
///
/// The id is also the certificate's common name, and RFC 5280 caps a common
/// name at 64 characters (`ub-common-name`). It further names a directory and
/// appears in every log line about the node.
pub const MAX_NODE_ID_LEN: usize = 64;

/// Checks that `id` is 1 to [`MAX_NODE_ID_LEN`] ASCII letters, digits, `-`,
/// `_` or `.`, starting with a letter or digit.
///
/// Ids are case-sensitive and used exactly as given. The first-character rule
/// keeps ids from looking like command-line flags or hidden files.
pub fn validate_node_id(id: &str) -> Result<(), CertError> {
    let invalid = |problem| CertError::InvalidNodeId {
        id: id.to_owned(),
        problem,
    };

    let Some(first) = id.chars().next() else {
        return Err(invalid(NodeIdProblem::Empty));
    };
    if id.len() > MAX_NODE_ID_LEN {
        return Err(invalid(NodeIdProblem::TooLong { len: id.len() }));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(invalid(NodeIdProblem::BadFirstChar { ch: first }));
    }
    let allowed = |ch: char| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.');
    if let Some((index, ch)) = id.char_indices().find(|&(_, ch)| !allowed(ch)) {
        return Err(invalid(NodeIdProblem::BadChar { ch, index }));
    }
    Ok(())
}

/// Returns the identity URI of node `id`: [`NODE_URI_PREFIX`] followed by the id.
pub fn node_uri(id: &str) -> String {
    format!("{NODE_URI_PREFIX}{id}")
}

/// Returns the node id a DER-encoded certificate was issued to.
///
/// The certificate must carry exactly one URI SAN, that URI must start with
/// [`NODE_URI_PREFIX`], and the rest must be a valid node id. This checks
/// identity only: the caller (the TLS verifier) checks the signature chain
/// and the validity period.
pub fn node_id_from_der(cert_der: &[u8]) -> Result<String, CertError> {
    let cert = parse_certificate(cert_der, None)?;
    node_id_from_certificate(&cert)
}

/// Returns the node id carried by an already parsed certificate.
pub(crate) fn node_id_from_certificate(cert: &X509Certificate<'_>) -> Result<String, CertError> {
    let uris = uri_sans(cert, None)?;
    let uri = match uris.as_slice() {
        [] => return Err(CertError::MissingNodeUri),
        [uri] => *uri,
        _ => return Err(CertError::TooManyUris { count: uris.len() }),
    };
    let Some(id) = uri.strip_prefix(NODE_URI_PREFIX) else {
        return Err(CertError::ForeignUri {
            uri: uri.to_owned(),
        });
    };

    validate_node_id(id)?;
    Ok(id.to_owned())
}

/// Parses one DER certificate, rejecting trailing bytes.
///
/// `path` names the file the bytes came from, for the error message.
pub(crate) fn parse_certificate<'a>(
    der: &'a [u8],
    path: Option<&Path>,
) -> Result<X509Certificate<'a>, CertError> {
    let bad = |source| CertError::BadCertificate {
        path: path.map(Path::to_path_buf),
        source,
    };

    let (rest, cert) = X509Certificate::from_der(der).map_err(|err| bad(err.into()))?;
    if !rest.is_empty() {
        return Err(bad(X509Error::InvalidCertificate));
    }
    Ok(cert)
}

/// Returns the subject alternative names of a certificate, or none if it has
/// no SAN extension.
pub(crate) fn general_names<'a>(
    cert: &'a X509Certificate<'a>,
    path: Option<&Path>,
) -> Result<&'a [GeneralName<'a>], CertError> {
    let extension =
        cert.subject_alternative_name()
            .map_err(|source| CertError::BadCertificate {
                path: path.map(Path::to_path_buf),
                source,
            })?;
    Ok(extension.map_or(&[][..], |ext| &ext.value.general_names[..]))
}

fn uri_sans<'a>(
    cert: &'a X509Certificate<'a>,
    path: Option<&Path>,
) -> Result<Vec<&'a str>, CertError> {
    let uris = general_names(cert, path)?
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    Ok(uris)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_accepts_allowed_forms() {
        for id in [
            "a",
            "Z",
            "7",
            "node-1",
            "Node_2.eu",
            "a.b-c_d",
            &"x".repeat(64),
        ] {
            assert!(validate_node_id(id).is_ok(), "{id:?} should be accepted");
        }
    }

    #[test]
    fn node_id_rejects_each_problem() {
        let cases: [(&str, NodeIdProblem); 7] = [
            ("", NodeIdProblem::Empty),
            (&"x".repeat(65), NodeIdProblem::TooLong { len: 65 }),
            ("-node", NodeIdProblem::BadFirstChar { ch: '-' }),
            (".hidden", NodeIdProblem::BadFirstChar { ch: '.' }),
            ("node/1", NodeIdProblem::BadChar { ch: '/', index: 4 }),
            ("node 1", NodeIdProblem::BadChar { ch: ' ', index: 4 }),
            ("nöde", NodeIdProblem::BadChar { ch: 'ö', index: 1 }),
        ];
        for (id, expected) in cases {
            match validate_node_id(id) {
                Err(CertError::InvalidNodeId { id: got, problem }) => {
                    assert_eq!(got, id);
                    assert_eq!(problem, expected, "problem for {id:?}");
                }
                other => panic!("{id:?}: expected InvalidNodeId, got {other:?}"),
            }
        }
    }

    #[test]
    fn node_id_error_lists_rule() {
        let message = validate_node_id("a/b").unwrap_err().to_string();
        assert!(message.contains("\"a/b\""), "{message}");
        assert!(message.contains("ASCII letters, digits"), "{message}");
        assert!(
            message.contains("starts with a letter or digit"),
            "{message}"
        );
    }

    #[test]
    fn node_uri_keeps_case() {
        assert_eq!(node_uri("Node-A"), "spiffe://dispotify/node/Node-A");
    }

    #[test]
    fn garbage_der_is_bad_certificate() {
        let err = node_id_from_der(b"not a certificate").unwrap_err();
        assert!(
            matches!(err, CertError::BadCertificate { path: None, .. }),
            "{err:?}"
        );
    }
}
