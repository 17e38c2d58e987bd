//! Library-level tests: dev certificates, expired certificates, loading
//! helpers and node identity checks on certificates made by hand.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{ensure, Result};
use dispotify_certs::{
    dev_certificates, init_ca, inspect, issue_node_cert, node_id_from_der, read_pem_certs,
    read_pem_key, CertError, NodeCertRequest, NodePaths, Validity,
};
use rcgen::{CertificateParams, KeyPair, SanType};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// Reads every file under `dir` (one level of subdirectories deep) so that a
/// test can tell whether anything was rewritten.
fn snapshot(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let sub = entry?.path();
        for file in fs::read_dir(&sub)? {
            let path = file?.path();
            let name = path.strip_prefix(dir)?.display().to_string();
            files.push((name, fs::read(&path)?));
        }
    }
    files.sort();
    Ok(files)
}

fn single_cert(path: &Path) -> Result<Vec<u8>> {
    let mut certs = read_pem_certs(path)?;
    ensure!(
        certs.len() == 1,
        "{} holds {} certificates",
        path.display(),
        certs.len()
    );
    Ok(certs.swap_remove(0))
}

/// Makes a self-signed certificate with the given URI SANs, bypassing the
/// library, to feed identity checks with shapes it never issues.
fn self_signed_with_uris(uris: &[&str]) -> Result<Vec<u8>> {
    let mut params = CertificateParams::default();
    for uri in uris {
        params
            .subject_alt_names
            .push(SanType::URI((*uri).to_owned().try_into()?));
    }
    params
        .subject_alt_names
        .push(SanType::DnsName("localhost".to_owned().try_into()?));
    let key = KeyPair::generate()?;
    Ok(params.self_signed(&key)?.der().to_vec())
}

#[test]
fn dev_certificates_reuses_valid_files() -> Result<()> {
    let dir = tempfile::tempdir()?;
    dev_certificates(dir.path(), &ids(&["n1", "n2", "n3"]))?;
    let first = snapshot(dir.path())?;
    assert_eq!(
        first.len(),
        2 + 3 * 3,
        "files: {:?}",
        first.iter().map(|f| &f.0).collect::<Vec<_>>()
    );

    dev_certificates(dir.path(), &ids(&["n1", "n2", "n3"]))?;
    assert_eq!(snapshot(dir.path())?, first, "second run rewrote files");

    for id in ["n1", "n2", "n3"] {
        let der = single_cert(&dir.path().join(id).join("node.pem"))?;
        assert_eq!(node_id_from_der(&der)?, id);
        let info = inspect(&dir.path().join(id).join("node.pem"))?;
        assert_eq!(info.dns_names, vec!["localhost"]);
        assert_eq!(info.ip_addrs, vec![std::net::IpAddr::from([127, 0, 0, 1])]);
    }
    Ok(())
}

#[test]
fn dev_certificates_repairs_only_broken_node() -> Result<()> {
    let dir = tempfile::tempdir()?;
    dev_certificates(dir.path(), &ids(&["n1", "n2"]))?;
    let n1_before = fs::read(dir.path().join("n1/node.pem"))?;
    let n2_before = fs::read(dir.path().join("n2/node.pem"))?;
    let ca_before = fs::read(dir.path().join("ca/ca.pem"))?;

    fs::remove_file(dir.path().join("n2/node.key"))?;
    dev_certificates(dir.path(), &ids(&["n1", "n2", "n4"]))?;

    assert_eq!(
        fs::read(dir.path().join("ca/ca.pem"))?,
        ca_before,
        "CA replaced"
    );
    assert_eq!(
        fs::read(dir.path().join("n1/node.pem"))?,
        n1_before,
        "healthy node reissued"
    );
    assert_ne!(
        fs::read(dir.path().join("n2/node.pem"))?,
        n2_before,
        "broken node kept"
    );
    assert!(dir.path().join("n2/node.key").exists());
    assert!(
        dir.path().join("n4/node.pem").exists(),
        "new node not issued"
    );
    Ok(())
}

#[test]
fn dev_certificates_reissues_after_new_ca() -> Result<()> {
    let dir = tempfile::tempdir()?;
    dev_certificates(dir.path(), &ids(&["n1"]))?;
    let node_before = fs::read(dir.path().join("n1/node.pem"))?;

    // A CA whose key no longer matches its certificate is unusable.
    let stray = tempfile::tempdir()?;
    init_ca(stray.path(), false)?;
    fs::copy(stray.path().join("ca.key"), dir.path().join("ca/ca.key"))?;
    dev_certificates(dir.path(), &ids(&["n1"]))?;

    let node_der = single_cert(&dir.path().join("n1/node.pem"))?;
    let ca_der = single_cert(&dir.path().join("ca/ca.pem"))?;
    let (_, node) = X509Certificate::from_der(&node_der)?;
    let (_, ca) = X509Certificate::from_der(&ca_der)?;
    node.verify_signature(Some(ca.public_key()))?;
    assert_ne!(fs::read(dir.path().join("n1/node.pem"))?, node_before);
    assert_eq!(
        fs::read(dir.path().join("n1/ca.pem"))?,
        fs::read(dir.path().join("ca/ca.pem"))?
    );
    Ok(())
}

#[test]
fn dev_certificates_rejects_bad_ids() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let err = dev_certificates(dir.path(), &ids(&["n1", "ca"])).unwrap_err();
    assert!(matches!(err, CertError::DevIdTaken { .. }), "{err:?}");

    let err = dev_certificates(dir.path(), &ids(&["../escape"])).unwrap_err();
    assert!(matches!(err, CertError::InvalidNodeId { .. }), "{err:?}");
    assert!(
        !dir.path().join("ca").exists(),
        "CA created despite invalid ids"
    );
    Ok(())
}

#[test]
fn expired_cert_can_be_issued() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca_dir = dir.path().join("ca");
    init_ca(&ca_dir, false)?;

    let now = SystemTime::now();
    let request = NodeCertRequest {
        validity: Validity {
            not_before: now - 10 * DAY,
            not_after: now - DAY,
        },
        ..NodeCertRequest::new("old-node")
    };
    let paths = issue_node_cert(&ca_dir, &request, &dir.path().join("old"), false)?;

    let info = inspect(&paths.cert)?;
    assert!(!info.is_valid_now());
    assert_eq!(info.node_id.as_deref(), Some("old-node"));
    let text = info.to_string();
    assert!(text.contains("EXPIRED (1 day ago)"), "{text}");

    let der = single_cert(&paths.cert)?;
    let (_, cert) = X509Certificate::from_der(&der)?;
    assert!(
        !cert.validity().is_valid(),
        "x509-parser sees the certificate as valid"
    );
    Ok(())
}

#[test]
fn empty_validity_is_rejected() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca_dir = dir.path().join("ca");
    init_ca(&ca_dir, false)?;

    let now = SystemTime::now();
    let request = NodeCertRequest {
        validity: Validity {
            not_before: now,
            not_after: now - DAY,
        },
        ..NodeCertRequest::new("n1")
    };
    let err = issue_node_cert(&ca_dir, &request, &dir.path().join("n1"), false).unwrap_err();
    assert!(matches!(err, CertError::InvalidValidity { .. }), "{err:?}");
    Ok(())
}

#[test]
fn loading_helpers_return_matching_der() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca_dir = dir.path().join("ca");
    init_ca(&ca_dir, false)?;
    let paths = issue_node_cert(
        &ca_dir,
        &NodeCertRequest::new("n1"),
        &dir.path().join("n1"),
        false,
    )?;
    assert_eq!(paths, NodePaths::in_dir(&dir.path().join("n1")));

    let cert_der = single_cert(&paths.cert)?;
    let key_der = read_pem_key(&paths.key)?;
    let key = KeyPair::try_from(key_der.as_slice())?;
    let (_, cert) = X509Certificate::from_der(&cert_der)?;
    assert_eq!(cert.public_key().raw, key.public_key_der().as_slice());
    Ok(())
}

#[test]
fn issuing_checks_ca_key_matches() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca_dir = dir.path().join("ca");
    let stray = dir.path().join("stray");
    init_ca(&ca_dir, false)?;
    init_ca(&stray, false)?;
    fs::copy(stray.join("ca.key"), ca_dir.join("ca.key"))?;

    let err = issue_node_cert(
        &ca_dir,
        &NodeCertRequest::new("n1"),
        &dir.path().join("n1"),
        false,
    )
    .unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err:?}");
    Ok(())
}

#[test]
fn issuing_rejects_leaf_as_ca() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca_dir = dir.path().join("ca");
    init_ca(&ca_dir, false)?;
    let node = issue_node_cert(
        &ca_dir,
        &NodeCertRequest::new("n1"),
        &dir.path().join("n1"),
        false,
    )?;

    let fake_ca = dir.path().join("fake-ca");
    fs::create_dir(&fake_ca)?;
    fs::copy(&node.cert, fake_ca.join("ca.pem"))?;
    fs::copy(&node.key, fake_ca.join("ca.key"))?;
    let err = issue_node_cert(
        &fake_ca,
        &NodeCertRequest::new("n2"),
        &dir.path().join("n2"),
        false,
    )
    .unwrap_err();
    assert!(matches!(err, CertError::NotCa { .. }), "{err:?}");
    Ok(())
}

#[test]
fn missing_ca_key_is_missing_ca() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca_dir = dir.path().join("ca");
    init_ca(&ca_dir, false)?;
    fs::remove_file(ca_dir.join("ca.key"))?;

    let err = issue_node_cert(
        &ca_dir,
        &NodeCertRequest::new("n1"),
        &dir.path().join("n1"),
        false,
    )
    .unwrap_err();
    match err {
        CertError::MissingCa { missing, .. } => assert_eq!(missing, ca_dir.join("ca.key")),
        other => panic!("expected MissingCa, got {other:?}"),
    }
    Ok(())
}

#[test]
fn node_id_requires_exactly_one_node_uri() -> Result<()> {
    let none = self_signed_with_uris(&[])?;
    let err = node_id_from_der(&none).unwrap_err();
    assert!(matches!(err, CertError::MissingNodeUri), "{err:?}");

    let two = self_signed_with_uris(&["spiffe://dispotify/node/a", "spiffe://dispotify/node/b"])?;
    let err = node_id_from_der(&two).unwrap_err();
    assert!(
        matches!(err, CertError::TooManyUris { count: 2 }),
        "{err:?}"
    );

    let extra = self_signed_with_uris(&["spiffe://dispotify/node/a", "https://example.test/"])?;
    let err = node_id_from_der(&extra).unwrap_err();
    assert!(
        matches!(err, CertError::TooManyUris { count: 2 }),
        "{err:?}"
    );

    let foreign = self_signed_with_uris(&["spiffe://other/node/a"])?;
    let err = node_id_from_der(&foreign).unwrap_err();
    assert!(matches!(err, CertError::ForeignUri { .. }), "{err:?}");

    let bad_id = self_signed_with_uris(&["spiffe://dispotify/node/a/b"])?;
    let err = node_id_from_der(&bad_id).unwrap_err();
    assert!(matches!(err, CertError::InvalidNodeId { .. }), "{err:?}");

    let empty_id = self_signed_with_uris(&["spiffe://dispotify/node/"])?;
    let err = node_id_from_der(&empty_id).unwrap_err();
    assert!(matches!(err, CertError::InvalidNodeId { .. }), "{err:?}");

    let good = self_signed_with_uris(&["spiffe://dispotify/node/Edge.7"])?;
    assert_eq!(node_id_from_der(&good)?, "Edge.7");
    Ok(())
}

#[test]
fn node_id_rejects_trailing_bytes() -> Result<()> {
    let mut der = self_signed_with_uris(&["spiffe://dispotify/node/a"])?;
    der.push(0);
    let err = node_id_from_der(&der).unwrap_err();
    assert!(matches!(err, CertError::BadCertificate { .. }), "{err:?}");
    Ok(())
}
