//! Runs the real `dispotify-certgen` binary in temporary directories and
//! checks the files it writes with x509-parser.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::{ensure, Context, Result};
use dispotify_certs::{node_id_from_der, read_pem_certs, NODE_URI_PREFIX};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

fn certgen(args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_dispotify-certgen"))
        .args(args)
        .output()
        .context("failed to run dispotify-certgen")
}

/// Runs certgen and fails the test, showing stderr, unless it succeeds.
fn certgen_ok(args: &[&str]) -> Result<Output> {
    let output = certgen(args)?;
    ensure!(
        output.status.success(),
        "dispotify-certgen {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Creates a CA in `dir/ca` and a node certificate for `id` in `dir/<id>`,
/// passing `extra` to the `node` subcommand.
fn make_node(dir: &Path, id: &str, extra: &[&str]) -> Result<()> {
    let ca = dir.join("ca");
    let out = dir.join(id);
    certgen_ok(&["init", "--out", path_arg(&ca)])?;
    let mut args = vec![
        "node",
        "--ca",
        path_arg(&ca),
        "--id",
        id,
        "--out",
        path_arg(&out),
    ];
    args.extend_from_slice(extra);
    certgen_ok(&args)?;
    Ok(())
}

fn first_cert(path: &Path) -> Result<Vec<u8>> {
    let mut certs = read_pem_certs(path)?;
    ensure!(
        certs.len() == 1,
        "{} holds {} certificates",
        path.display(),
        certs.len()
    );
    Ok(certs.swap_remove(0))
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (rest, cert) = X509Certificate::from_der(der)?;
    ensure!(rest.is_empty(), "trailing bytes after certificate");
    Ok(cert)
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Checks the failure contract of the binary: exit code 1 and one
/// `error: ...` line on stderr.
fn assert_one_line_error(output: &Output) -> String {
    let stderr = stderr_of(output);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "stderr: {stderr}");
    stderr
}

#[cfg(unix)]
fn mode_of(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(fs::metadata(path)?.permissions().mode() & 0o777)
}

#[cfg(unix)]
#[test]
fn init_writes_owner_only_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca");
    certgen_ok(&["init", "--out", path_arg(&ca)])?;

    assert_eq!(mode_of(&ca.join("ca.key"))?, 0o600);

    let ca_cert_der = first_cert(&ca.join("ca.pem"))?;
    let ca_cert = parse(&ca_cert_der)?;
    assert!(ca_cert.is_ca());
    assert_eq!(ca_cert.subject().to_string(), "CN=Dispotify cluster CA");
    Ok(())
}

#[test]
fn init_twice_needs_force() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca");
    certgen_ok(&["init", "--out", path_arg(&ca)])?;
    let first_key = fs::read(ca.join("ca.key"))?;

    let refused = certgen(&["init", "--out", path_arg(&ca)])?;
    let stderr = assert_one_line_error(&refused);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(
        fs::read(ca.join("ca.key"))?,
        first_key,
        "refused init changed the key"
    );

    certgen_ok(&["init", "--out", path_arg(&ca), "--force"])?;
    assert_ne!(
        fs::read(ca.join("ca.key"))?,
        first_key,
        "forced init kept the old key"
    );
    Ok(())
}

#[test]
fn node_cert_has_one_node_uri() -> Result<()> {
    let dir = tempfile::tempdir()?;
    make_node(dir.path(), "Node-1", &[])?;
    let der = first_cert(&dir.path().join("Node-1/node.pem"))?;
    let cert = parse(&der)?;

    let san = cert
        .subject_alternative_name()?
        .context("no SAN extension")?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    assert_eq!(uris, vec![format!("{NODE_URI_PREFIX}Node-1").as_str()]);
    assert_eq!(node_id_from_der(&der)?, "Node-1");
    assert_eq!(cert.subject().to_string(), "CN=Node-1");
    Ok(())
}

#[test]
fn node_cert_is_tls_leaf_for_both_sides() -> Result<()> {
    let dir = tempfile::tempdir()?;
    make_node(dir.path(), "n1", &[])?;
    let der = first_cert(&dir.path().join("n1/node.pem"))?;
    let cert = parse(&der)?;

    let eku = cert
        .extended_key_usage()?
        .context("no extended key usage")?;
    assert!(eku.value.server_auth, "serverAuth missing");
    assert!(eku.value.client_auth, "clientAuth missing");
    let key_usage = cert.key_usage()?.context("no key usage")?;
    assert!(
        key_usage.value.digital_signature(),
        "digitalSignature missing"
    );
    assert!(
        !key_usage.value.key_cert_sign(),
        "leaf may sign certificates"
    );
    let constraints = cert.basic_constraints()?.context("no basic constraints")?;
    assert!(!constraints.value.ca, "leaf is marked as a CA");
    Ok(())
}

#[test]
fn node_cert_carries_dns_and_ip_sans() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let extra = [
        "--dns",
        "n1.example.internal",
        "--dns",
        "localhost",
        "--ip",
        "10.0.0.7",
        "--ip",
        "::1",
    ];
    make_node(dir.path(), "n1", &extra)?;
    let der = first_cert(&dir.path().join("n1/node.pem"))?;
    let cert = parse(&der)?;

    let san = cert
        .subject_alternative_name()?
        .context("no SAN extension")?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(name) => dns.push(name.to_string()),
            GeneralName::IPAddress(octets) => ips.push(octets.to_vec()),
            _ => {}
        }
    }
    assert_eq!(dns, vec!["n1.example.internal", "localhost"]);
    let ipv6_loopback = std::net::Ipv6Addr::LOCALHOST.octets().to_vec();
    assert_eq!(ips, vec![vec![10, 0, 0, 7], ipv6_loopback]);
    Ok(())
}

#[test]
fn node_cert_chains_to_its_ca_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    make_node(dir.path(), "n1", &[])?;
    let node_der = first_cert(&dir.path().join("n1/node.pem"))?;
    let ca_der = first_cert(&dir.path().join("ca/ca.pem"))?;
    let node = parse(&node_der)?;
    let ca = parse(&ca_der)?;

    node.verify_signature(Some(ca.public_key()))?;
    assert_eq!(
        node.issuer().as_raw(),
        ca.subject().as_raw(),
        "issuer name bytes differ"
    );

    let other = tempfile::tempdir()?;
    certgen_ok(&["init", "--out", path_arg(other.path())])?;
    let other_der = first_cert(&other.path().join("ca.pem"))?;
    let other_ca = parse(&other_der)?;
    assert!(
        node.verify_signature(Some(other_ca.public_key())).is_err(),
        "node certificate verified against an unrelated CA"
    );
    Ok(())
}

#[cfg(unix)]
#[test]
fn node_files_sit_beside_ca_copy() -> Result<()> {
    let dir = tempfile::tempdir()?;
    make_node(dir.path(), "n1", &[])?;
    let node_dir = dir.path().join("n1");

    assert_eq!(mode_of(&node_dir.join("node.key"))?, 0o600);
    assert_eq!(
        fs::read(node_dir.join("ca.pem"))?,
        fs::read(dir.path().join("ca/ca.pem"))?
    );
    Ok(())
}

#[test]
fn node_twice_needs_force() -> Result<()> {
    let dir = tempfile::tempdir()?;
    make_node(dir.path(), "n1", &[])?;
    let ca = dir.path().join("ca");
    let out = dir.path().join("n1");
    let args = [
        "node",
        "--ca",
        path_arg(&ca),
        "--id",
        "n1",
        "--out",
        path_arg(&out),
    ];
    let first_cert_pem = fs::read(out.join("node.pem"))?;

    let refused = certgen(&args)?;
    let stderr = assert_one_line_error(&refused);
    assert!(stderr.contains("node.pem already exists"), "{stderr}");
    assert_eq!(fs::read(out.join("node.pem"))?, first_cert_pem);

    let mut forced = args.to_vec();
    forced.push("--force");
    certgen_ok(&forced)?;
    assert_ne!(fs::read(out.join("node.pem"))?, first_cert_pem);
    Ok(())
}

#[test]
fn node_without_ca_says_run_init() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("no-ca-here");
    let out = dir.path().join("n1");
    let output = certgen(&[
        "node",
        "--ca",
        path_arg(&ca),
        "--id",
        "n1",
        "--out",
        path_arg(&out),
    ])?;

    let stderr = assert_one_line_error(&output);
    let expected = format!("run `dispotify-certgen init --out {}` first", ca.display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        !out.exists(),
        "output directory created despite the missing CA"
    );
    Ok(())
}

#[test]
fn node_rejects_invalid_id() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca");
    certgen_ok(&["init", "--out", path_arg(&ca)])?;

    for id in ["bad/id", "-leading-dash", "space in id", "ünïcode"] {
        let out = dir.path().join("out");
        let id_arg = format!("--id={id}");
        let output = certgen(&[
            "node",
            "--ca",
            path_arg(&ca),
            &id_arg,
            "--out",
            path_arg(&out),
        ])?;
        let stderr = assert_one_line_error(&output);
        assert!(stderr.contains("invalid node id"), "{id}: {stderr}");
        assert!(stderr.contains("ASCII letters, digits"), "{id}: {stderr}");
        assert!(!out.join("node.pem").exists(), "{id}: certificate written");
    }
    Ok(())
}

#[test]
fn node_rejects_invalid_dns_name() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca");
    certgen_ok(&["init", "--out", path_arg(&ca)])?;
    let out = dir.path().join("n1");

    let output = certgen(&[
        "node",
        "--ca",
        path_arg(&ca),
        "--id",
        "n1",
        "--dns",
        "bad name",
        "--out",
        path_arg(&out),
    ])?;
    let stderr = assert_one_line_error(&output);
    assert!(stderr.contains("invalid DNS name \"bad name\""), "{stderr}");
    Ok(())
}

#[test]
fn inspect_unreadable_file_names_path() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("missing.pem");
    let output = certgen(&["inspect", path_arg(&missing)])?;
    let stderr = assert_one_line_error(&output);
    assert!(
        stderr.contains(&format!("failed to read {}", missing.display())),
        "{stderr}"
    );

    // Reading a directory fails even for root, unlike a permission check.
    let output = certgen(&["inspect", path_arg(dir.path())])?;
    let stderr = assert_one_line_error(&output);
    assert!(
        stderr.contains(&format!("failed to read {}", dir.path().display())),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn inspect_rejects_non_certificate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca");
    certgen_ok(&["init", "--out", path_arg(&ca)])?;

    let output = certgen(&["inspect", path_arg(&ca.join("ca.key"))])?;
    let stderr = assert_one_line_error(&output);
    assert!(stderr.contains("no CERTIFICATE PEM block"), "{stderr}");

    let junk = dir.path().join("junk.der");
    fs::write(&junk, b"\x30\x03\x02\x01")?;
    let output = certgen(&["inspect", path_arg(&junk)])?;
    let stderr = assert_one_line_error(&output);
    assert!(stderr.contains("invalid X.509 certificate in"), "{stderr}");
    Ok(())
}

#[test]
fn inspect_shows_id_and_validity() -> Result<()> {
    let dir = tempfile::tempdir()?;
    make_node(dir.path(), "n7", &["--days", "30", "--ip", "192.0.2.1"])?;
    let output = certgen_ok(&["inspect", path_arg(&dir.path().join("n7/node.pem"))])?;
    let stdout = String::from_utf8(output.stdout)?;

    assert!(stdout.contains("subject:       CN=n7"), "{stdout}");
    assert!(stdout.contains("node id:       n7"), "{stdout}");
    assert!(stdout.contains("spiffe://dispotify/node/n7"), "{stdout}");
    assert!(stdout.contains("IP addresses:  192.0.2.1"), "{stdout}");
    assert!(
        stdout.contains("issuer:        CN=Dispotify cluster CA"),
        "{stdout}"
    );
    assert!(stdout.contains("CA:            no"), "{stdout}");
    assert!(stdout.contains("not before:    "), "{stdout}");
    assert!(stdout.contains("not after:     "), "{stdout}");
    // Issued a moment ago for 30 days, so 29 whole days remain.
    assert!(
        stdout.contains("status:        valid, 29 days left"),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn inspect_reads_der_files() -> Result<()> {
    let dir = tempfile::tempdir()?;
    make_node(dir.path(), "n1", &[])?;
    let der = first_cert(&dir.path().join("n1/node.pem"))?;
    let der_path = dir.path().join("node.der");
    fs::write(&der_path, &der)?;

    let output = certgen_ok(&["inspect", path_arg(&der_path)])?;
    let stdout = String::from_utf8(output.stdout)?;
    assert!(stdout.contains("node id:       n1"), "{stdout}");
    Ok(())
}
