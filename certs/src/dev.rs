//! Certificates for a local development cluster (`dispotify dev`).
//!
//! Layout under the chosen directory:
//!
//! ```text
//! DIR/ca/ca.pem, DIR/ca/ca.key           the development CA
//! DIR/<id>/node.pem, node.key, ca.pem    one directory per node
//! ```
//!
//! Files that are still usable are kept, so restarting a dev cluster does not
//! churn keys. Anything missing, broken, expiring or issued by another CA is
//! replaced.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::KeyPair;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::error::CertError;
use crate::files::{read_file, read_pem_certs, read_pem_key};
use crate::identity::{
    general_names, node_id_from_certificate, parse_certificate, validate_node_id,
};
use crate::issue::{init_ca, issue_node_cert, LoadedCa, NodeCertRequest, NodePaths};

/// Name of the CA directory inside the dev certificate directory.
pub const DEV_CA_DIR: &str = "ca";

/// The DNS name every dev node certificate carries.
pub const DEV_DNS_NAME: &str = "localhost";

/// The IP address every dev node certificate carries.
pub const DEV_IP_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Remaining lifetime below which a dev certificate is reissued.
///
/// A week keeps a dev cluster started today from hitting an expiry while it
/// runs, at the cost of one reissue a week before the end.
pub const DEV_RENEWAL_MARGIN: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Creates or reuses a CA in `dir/ca` and a certificate for each node id in
/// `dir/<id>/`, each with the SANs `localhost` and `127.0.0.1`.
///
/// Existing files are kept when they are valid for at least
/// [`DEV_RENEWAL_MARGIN`], match their keys, and (for nodes) carry the right
/// id and chain to the current CA. Otherwise they are replaced. A new CA
/// causes every node certificate to be reissued.
pub fn dev_certificates(dir: &Path, ids: &[String]) -> Result<(), CertError> {
    let ca_dir = dir.join(DEV_CA_DIR);
    for id in ids {
        validate_node_id(id)?;
        if id.eq_ignore_ascii_case(DEV_CA_DIR) {
            return Err(CertError::DevIdTaken {
                id: id.clone(),
                ca_dir,
            });
        }
    }

    let now = SystemTime::now();
    let ca = match LoadedCa::load(&ca_dir) {
        Ok(ca) if ca_is_current(&ca, now) => {
            tracing::debug!(ca_dir = %ca_dir.display(), "reusing dev CA");
            ca
        }
        _ => {
            init_ca(&ca_dir, true)?;
            tracing::debug!(ca_dir = %ca_dir.display(), "created dev CA");
            LoadedCa::load(&ca_dir)?
        }
    };

    for id in ids {
        let node_dir = dir.join(id);
        let paths = NodePaths::in_dir(&node_dir);
        if node_is_current(&ca, id, &paths, now) {
            tracing::debug!(node_id = %id, "reusing dev node certificate");
            continue;
        }

        let request = NodeCertRequest {
            dns_names: vec![DEV_DNS_NAME.to_owned()],
            ip_addrs: vec![DEV_IP_ADDR],
            ..NodeCertRequest::new(id.clone())
        };
        issue_node_cert(&ca_dir, &request, &node_dir, true)?;
    }
    Ok(())
}

fn ca_is_current(ca: &LoadedCa, now: SystemTime) -> bool {
    parse_certificate(&ca.der, None).is_ok_and(|cert| lasts_past_margin(&cert, now))
}

/// Returns whether the files in `paths` form a usable dev certificate for
/// `id` under `ca`. Any unreadable or malformed file counts as unusable.
fn node_is_current(ca: &LoadedCa, id: &str, paths: &NodePaths, now: SystemTime) -> bool {
    let Ok(ca_cert) = parse_certificate(&ca.der, None) else {
        return false;
    };
    let Ok(mut node_ders) = read_pem_certs(&paths.cert) else {
        return false;
    };
    let node_der = node_ders.swap_remove(0);
    let Ok(node_cert) = parse_certificate(&node_der, None) else {
        return false;
    };

    let id_matches = node_id_from_certificate(&node_cert).is_ok_and(|found| found == id);
    let signed_by_ca = node_cert
        .verify_signature(Some(ca_cert.public_key()))
        .is_ok();
    let ca_copy_matches = read_file(&paths.ca_cert).is_ok_and(|bytes| bytes == ca.pem_bytes);

    id_matches
        && signed_by_ca
        && ca_copy_matches
        && lasts_past_margin(&node_cert, now)
        && has_dev_sans(&node_cert)
        && key_matches(&node_cert, &paths.key)
}

fn lasts_past_margin(cert: &X509Certificate<'_>, now: SystemTime) -> bool {
    let validity = cert.validity();
    let not_before: SystemTime = validity.not_before.to_datetime().into();
    let not_after: SystemTime = validity.not_after.to_datetime().into();
    not_before <= now && now + DEV_RENEWAL_MARGIN < not_after
}

fn has_dev_sans(cert: &X509Certificate<'_>) -> bool {
    let Ok(names) = general_names(cert, None) else {
        return false;
    };
    let dev_ip = match DEV_IP_ADDR {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let has_dns = names
        .iter()
        .any(|name| matches!(name, GeneralName::DNSName(dns) if *dns == DEV_DNS_NAME));
    let has_ip = names
        .iter()
        .any(|name| matches!(name, GeneralName::IPAddress(octets) if *octets == dev_ip));
    has_dns && has_ip
}

fn key_matches(cert: &X509Certificate<'_>, key_path: &Path) -> bool {
    let Ok(key_der) = read_pem_key(key_path) else {
        return false;
    };
    KeyPair::try_from(key_der.as_slice())
        .is_ok_and(|key| key.public_key_der().as_slice() == cert.public_key().raw)
}
