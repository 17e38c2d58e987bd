//! Creating the cluster CA and issuing node certificates.
//!
//! Keys are ECDSA P-256, which rustls and every TLS stack accept. The CA has
//! a path length of zero, so it can sign node certificates but no
//! intermediate CA.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;

use crate::error::CertError;
use crate::files::{
    create_dir, ensure_absent, read_file, read_pem_certs, read_pem_key, write_file, CERT_FILE_MODE,
    KEY_FILE_MODE,
};
use crate::identity::{node_uri, parse_certificate, validate_node_id};
use crate::validity::{Validity, CA_VALIDITY_DAYS};

/// Common name of the cluster CA.
pub const CA_COMMON_NAME: &str = "Dispotify cluster CA";

/// File name of the CA certificate, in the CA directory and beside each node
/// certificate.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of a node certificate.
pub const NODE_CERT_FILE: &str = "node.pem";
/// File name of a node private key.
pub const NODE_KEY_FILE: &str = "node.key";

/// Paths of the cluster CA's certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CaPaths {
    /// Returns the paths of `ca.pem` and `ca.key` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join(CA_CERT_FILE),
            key: dir.join(CA_KEY_FILE),
        }
    }
}

/// Paths of one node's certificate, key and CA copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePaths {
    /// The node certificate alone, without the CA.
    pub cert: PathBuf,
    /// The node's PKCS#8 private key.
    pub key: PathBuf,
    /// A copy of the cluster CA certificate, the trust root for peers.
    pub ca_cert: PathBuf,
}

impl NodePaths {
    /// Returns the paths of `node.pem`, `node.key` and `ca.pem` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join(NODE_CERT_FILE),
            key: dir.join(NODE_KEY_FILE),
            ca_cert: dir.join(CA_CERT_FILE),
        }
    }
}

/// Contents requested for a node certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCertRequest {
    /// The node id, which becomes the common name and the node URI SAN.
    pub id: String,
    /// Extra DNS names, for clients that reach the node by name.
    pub dns_names: Vec<String>,
    /// Extra IP addresses, for clients that reach the node by address.
    pub ip_addrs: Vec<IpAddr>,
    pub validity: Validity,
}

impl NodeCertRequest {
    /// Returns a request for `id` with no extra SANs and the default validity.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            dns_names: Vec::new(),
            ip_addrs: Vec::new(),
            validity: Validity::default(),
        }
    }
}

/// Creates a new cluster CA in `out_dir`, writing `ca.pem` and `ca.key`.
///
/// The CA is valid for [`CA_VALIDITY_DAYS`] days. Existing files are replaced
/// only when `force` is set, and replacing the CA invalidates every node
/// certificate it issued.
pub fn init_ca(out_dir: &Path, force: bool) -> Result<CaPaths, CertError> {
    let paths = CaPaths::in_dir(out_dir);
    create_dir(out_dir)?;
    ensure_absent(&[&paths.cert, &paths.key], force)?;

    let key = generate_key("CA key")?;
    let validity = Validity::days_from(SystemTime::now(), CA_VALIDITY_DAYS);
    let (not_before, not_after) = validity.to_offset_pair()?;

    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params
        .self_signed(&key)
        .map_err(|source| CertError::Generate {
            item: "CA certificate",
            source,
        })?;

    write_file(
        &paths.key,
        key.serialize_pem().as_bytes(),
        KEY_FILE_MODE,
        force,
    )?;
    write_file(&paths.cert, cert.pem().as_bytes(), CERT_FILE_MODE, force)?;
    tracing::debug!(ca_dir = %out_dir.display(), "created cluster CA");
    Ok(paths)
}

/// Issues a certificate for node `req.id`, signed by the CA in `ca_dir`.
///
/// Writes `node.pem` (the node certificate alone, not followed by the CA),
/// `node.key` (mode 0600) and a copy of `ca.pem` to `out_dir`. The copy is
/// skipped when `out_dir` already contains an identical `ca.pem`. Existing files
/// are replaced only when `force` is set.
pub fn issue_node_cert(
    ca_dir: &Path,
    req: &NodeCertRequest,
    out_dir: &Path,
    force: bool,
) -> Result<NodePaths, CertError> {
    validate_node_id(&req.id)?;
    let (not_before, not_after) = req.validity.to_offset_pair()?;
    let subject_alt_names = node_sans(req)?;
    let ca = LoadedCa::load(ca_dir)?;

    let paths = NodePaths::in_dir(out_dir);
    create_dir(out_dir)?;
    let ca_copy_needed = read_file(&paths.ca_cert).ok().as_deref() != Some(&ca.pem_bytes[..]);
    let mut outputs = vec![paths.cert.as_path(), paths.key.as_path()];
    if ca_copy_needed {
        outputs.push(&paths.ca_cert);
    }
    ensure_absent(&outputs, force)?;

    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, &req.id);
    params.subject_alt_names = subject_alt_names;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;

    let key = generate_key("node key")?;
    let cert = params
        .signed_by(&key, &ca.issuer, &ca.key)
        .map_err(|source| CertError::Generate {
            item: "node certificate",
            source,
        })?;

    write_file(
        &paths.key,
        key.serialize_pem().as_bytes(),
        KEY_FILE_MODE,
        force,
    )?;
    write_file(&paths.cert, cert.pem().as_bytes(), CERT_FILE_MODE, force)?;
    if ca_copy_needed {
        write_file(&paths.ca_cert, &ca.pem_bytes, CERT_FILE_MODE, force)?;
    }
    tracing::debug!(node_id = %req.id, out_dir = %out_dir.display(), "issued node certificate");
    Ok(paths)
}

/// The cluster CA, loaded and checked, ready to sign.
pub(crate) struct LoadedCa {
    /// The exact bytes of `ca.pem`, for copying beside node certificates.
    pub(crate) pem_bytes: Vec<u8>,
    /// DER of the CA certificate.
    pub(crate) der: Vec<u8>,
    /// The CA rebuilt as an rcgen certificate, because rcgen takes the issuer
    /// name and key identifier from one.
    issuer: Certificate,
    key: KeyPair,
}

impl LoadedCa {
    /// Loads `ca.pem` and `ca.key` from `ca_dir` and checks that the first is
    /// a CA certificate and the second its private key.
    pub(crate) fn load(ca_dir: &Path) -> Result<Self, CertError> {
        let paths = CaPaths::in_dir(ca_dir);
        for path in [&paths.cert, &paths.key] {
            if !path.exists() {
                return Err(CertError::MissingCa {
                    ca_dir: ca_dir.to_path_buf(),
                    missing: path.clone(),
                });
            }
        }

        let pem_bytes = read_file(&paths.cert)?;
        let der = read_pem_certs(&paths.cert)?.swap_remove(0);
        let key_der = read_pem_key(&paths.key)?;
        let key = KeyPair::try_from(key_der.as_slice()).map_err(|source| CertError::BadKey {
            path: paths.key.clone(),
            source,
        })?;

        let cert = parse_certificate(&der, Some(&paths.cert))?;
        check_is_signing_ca(&cert, &paths.cert)?;
        if cert.public_key().raw != key.public_key_der().as_slice() {
            return Err(CertError::KeyMismatch {
                cert_path: paths.cert,
                key_path: paths.key,
            });
        }

        let issuer = CertificateParams::from_ca_cert_der(&der.as_slice().into())
            .and_then(|params| params.self_signed(&key))
            .map_err(|source| CertError::Generate {
                item: "issuer from the CA certificate",
                source,
            })?;
        Ok(Self {
            pem_bytes,
            der,
            issuer,
            key,
        })
    }
}

/// Checks that a certificate may sign others and that rcgen can take its
/// subject as an issuer name.
fn check_is_signing_ca(cert: &X509Certificate<'_>, path: &Path) -> Result<(), CertError> {
    if !cert.is_ca() {
        return Err(CertError::NotCa {
            path: path.to_path_buf(),
        });
    }
    // rcgen rebuilds the issuer name one attribute per RDN and panics on an
    // empty RDN, so a file from another tool is checked here first.
    let simple_name = cert.subject().iter().all(|rdn| rdn.iter().count() == 1);
    if !simple_name {
        return Err(CertError::BadCertificate {
            path: Some(path.to_path_buf()),
            source: X509Error::InvalidX509Name,
        });
    }
    Ok(())
}

/// Maximum length of a DNS name in a SAN, the limit of RFC 1035.
const MAX_DNS_NAME_LEN: usize = 253;

/// Maximum length of one DNS label, the limit of RFC 1035.
const MAX_DNS_LABEL_LEN: usize = 63;

fn node_sans(req: &NodeCertRequest) -> Result<Vec<SanType>, CertError> {
    let mut sans = vec![SanType::URI(ia5(node_uri(&req.id))?)];
    for name in &req.dns_names {
        check_dns_name(name)?;
        sans.push(SanType::DnsName(ia5(name.clone())?));
    }
    sans.extend(req.ip_addrs.iter().copied().map(SanType::IpAddress));
    Ok(sans)
}

/// Checks a DNS name for a SAN: dot-separated labels of ASCII letters,
/// digits, '-' and '_', where the first label may be a '*' wildcard.
///
/// '_' is outside RFC 1123 host names but appears in container service names,
/// which nodes are often reached by.
fn check_dns_name(name: &str) -> Result<(), CertError> {
    let label_ok = |label: &str| {
        (1..=MAX_DNS_LABEL_LEN).contains(&label.len())
            && label
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_'))
    };
    let body = name.strip_prefix("*.").unwrap_or(name);

    let valid = (1..=MAX_DNS_NAME_LEN).contains(&name.len()) && body.split('.').all(label_ok);
    if !valid {
        return Err(CertError::BadDnsName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Converts checked ASCII text to the string type of URI and DNS SANs.
fn ia5(text: String) -> Result<rcgen::Ia5String, CertError> {
    text.try_into().map_err(|source| CertError::Generate {
        item: "subject alternative name",
        source,
    })
}

fn generate_key(item: &'static str) -> Result<KeyPair, CertError> {
    KeyPair::generate().map_err(|source| CertError::Generate { item, source })
}
