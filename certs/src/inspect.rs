//! Human-readable summaries of certificate files.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;

use crate::error::CertError;
use crate::files::{read_file, read_pem_certs};
use crate::identity::{general_names, node_id_from_certificate, parse_certificate};
use crate::validity::format_time;

const SECONDS_PER_DAY: u64 = 24 * 60 * 60;

/// Summary of a certificate file, as printed by `dispotify-certgen inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub path: PathBuf,
    /// Number of certificates in the file. Only the first is described.
    pub certificates_in_file: usize,
    pub subject: String,
    pub issuer: String,
    /// Serial number in colon-separated hex.
    pub serial: String,
    pub dns_names: Vec<String>,
    pub ip_addrs: Vec<IpAddr>,
    pub uris: Vec<String>,
    /// The node id, when the certificate is a well-formed node certificate.
    pub node_id: Option<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub is_ca: bool,
    /// The time the expiry status is computed against.
    pub inspected_at: SystemTime,
}

/// Reads the first certificate of a PEM or DER file and describes it.
pub fn inspect(path: &Path) -> Result<CertInfo, CertError> {
    let bytes = read_file(path)?;
    let (der, certificates_in_file) = if looks_like_pem(&bytes) {
        let mut certs = read_pem_certs(path)?;
        let count = certs.len();
        (certs.swap_remove(0), count)
    } else {
        (bytes, 1)
    };

    let cert = parse_certificate(&der, Some(path))?;
    describe(&cert, path, certificates_in_file, SystemTime::now())
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.trim_ascii_start().starts_with(b"-----BEGIN")
}

fn describe(
    cert: &X509Certificate<'_>,
    path: &Path,
    certificates_in_file: usize,
    inspected_at: SystemTime,
) -> Result<CertInfo, CertError> {
    let mut dns_names = Vec::new();
    let mut ip_addrs = Vec::new();
    let mut uris = Vec::new();
    for name in general_names(cert, Some(path))? {
        match name {
            GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
            GeneralName::URI(uri) => uris.push((*uri).to_owned()),
            GeneralName::IPAddress(octets) => ip_addrs.push(ip_from_octets(octets, path)?),
            _ => {}
        }
    }

    let validity = cert.validity();
    Ok(CertInfo {
        path: path.to_path_buf(),
        certificates_in_file,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        dns_names,
        ip_addrs,
        uris,
        node_id: node_id_from_certificate(cert).ok(),
        not_before: validity.not_before.to_datetime().into(),
        not_after: validity.not_after.to_datetime().into(),
        is_ca: cert.is_ca(),
        inspected_at,
    })
}

fn ip_from_octets(octets: &[u8], path: &Path) -> Result<IpAddr, CertError> {
    if let Ok(v4) = <[u8; 4]>::try_from(octets) {
        return Ok(Ipv4Addr::from(v4).into());
    }
    if let Ok(v6) = <[u8; 16]>::try_from(octets) {
        return Ok(Ipv6Addr::from(v6).into());
    }
    Err(CertError::BadCertificate {
        path: Some(path.to_path_buf()),
        source: X509Error::InvalidExtensions,
    })
}

impl CertInfo {
    /// Returns whether the certificate is within its validity period at
    /// [`CertInfo::inspected_at`].
    pub fn is_valid_now(&self) -> bool {
        self.not_before <= self.inspected_at && self.inspected_at <= self.not_after
    }

    fn status(&self) -> String {
        if let Ok(until_start) = self.not_before.duration_since(self.inspected_at) {
            if !until_start.is_zero() {
                return format!("NOT YET VALID (starts in {})", whole_days(until_start));
            }
        }
        match self.not_after.duration_since(self.inspected_at) {
            Ok(left) => format!("valid, {} left", whole_days(left)),
            Err(past) => format!("EXPIRED ({} ago)", whole_days(past.duration())),
        }
    }
}

fn whole_days(span: Duration) -> String {
    match span.as_secs() / SECONDS_PER_DAY {
        1 => "1 day".to_owned(),
        days => format!("{days} days"),
    }
}

fn join_or_none<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        return "(none)".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node_id = self
            .node_id
            .as_deref()
            .unwrap_or("(none: not a node certificate)");
        let is_ca = if self.is_ca { "yes" } else { "no" };

        writeln!(f, "file:          {}", self.path.display())?;
        if self.certificates_in_file > 1 {
            writeln!(
                f,
                "note:          showing the first of {} certificates",
                self.certificates_in_file
            )?;
        }
        writeln!(f, "subject:       {}", self.subject)?;
        writeln!(f, "node id:       {node_id}")?;
        writeln!(f, "DNS names:     {}", join_or_none(&self.dns_names))?;
        writeln!(f, "IP addresses:  {}", join_or_none(&self.ip_addrs))?;
        writeln!(f, "URIs:          {}", join_or_none(&self.uris))?;
        writeln!(f, "issuer:        {}", self.issuer)?;
        writeln!(f, "serial:        {}", self.serial)?;
        writeln!(f, "CA:            {is_ca}")?;
        writeln!(f, "not before:    {}", format_time(self.not_before))?;
        writeln!(f, "not after:     {}", format_time(self.not_after))?;
        write!(f, "status:        {}", self.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_valid_between(not_before: SystemTime, not_after: SystemTime) -> CertInfo {
        CertInfo {
            path: PathBuf::from("node.pem"),
            certificates_in_file: 1,
            subject: "CN=n1".to_owned(),
            issuer: "CN=Dispotify cluster CA".to_owned(),
            serial: "01".to_owned(),
            dns_names: Vec::new(),
            ip_addrs: Vec::new(),
            uris: Vec::new(),
            node_id: None,
            not_before,
            not_after,
            is_ca: false,
            inspected_at: SystemTime::UNIX_EPOCH + Duration::from_secs(100 * SECONDS_PER_DAY),
        }
    }

    fn day(n: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(n * SECONDS_PER_DAY)
    }

    #[test]
    fn status_counts_days_left() {
        let info = info_valid_between(day(90), day(130));
        assert!(info.is_valid_now());
        assert_eq!(info.status(), "valid, 30 days left");
    }

    #[test]
    fn status_marks_expired() {
        let info = info_valid_between(day(10), day(99));
        assert!(!info.is_valid_now());
        assert_eq!(info.status(), "EXPIRED (1 day ago)");
    }

    #[test]
    fn status_marks_not_yet_valid() {
        let info = info_valid_between(day(103), day(200));
        assert!(!info.is_valid_now());
        assert_eq!(info.status(), "NOT YET VALID (starts in 3 days)");
    }

    #[test]
    fn display_shows_missing_node_id_and_empty_lists() {
        let text = info_valid_between(day(90), day(130)).to_string();
        assert!(
            text.contains("node id:       (none: not a node certificate)"),
            "{text}"
        );
        assert!(text.contains("DNS names:     (none)"), "{text}");
        assert!(text.contains("CA:            no"), "{text}");
    }

    #[test]
    fn odd_ip_length_is_bad_certificate() {
        let err = ip_from_octets(&[1, 2, 3], Path::new("x.pem")).unwrap_err();
        assert!(matches!(err, CertError::BadCertificate { .. }), "{err:?}");
    }
}
