//! Mutual TLS between real endpoints: who is accepted and who is rejected.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{caller_id, echo, expired_validity, loopback, send_bulk, start_node, CertDirs};
use dispotify_transport::{StreamKind, TlsIdentity, TransportError};
use rustls::pki_types::CertificateDer;

/// Returns the node id in the certificate the server of `connection` sent.
fn server_node_id(connection: &quinn::Connection) -> String {
    let identity = connection.peer_identity().expect("handshake complete");
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .expect("rustls peer identity is a certificate chain");
    dispotify_certs::node_id_from_der(&chain[0]).expect("server certificate has a node id")
}

/// Dials `peer` and returns why the connection closed. A client whose
/// certificate the server rejects completes its own side of the TLS 1.3
/// handshake first, so the rejection arrives as a close frame.
async fn close_reason(
    endpoint: &dispotify_transport::Endpoint,
    peer: &str,
    addr: std::net::SocketAddr,
) -> quinn::ConnectionError {
    match endpoint.connection(peer, addr).await {
        Ok(connection) => tokio::time::timeout(Duration::from_secs(5), connection.closed())
            .await
            .expect("server should close the connection"),
        Err(TransportError::ConnectFailed { source, .. }) => source,
        Err(other) => panic!("expected a close from the server, got {other:?}"),
    }
}

/// Asserts that the peer closed the connection with a TLS alert, which QUIC
/// sends as transport error codes 0x100 to 0x1ff.
fn assert_tls_alert(reason: &quinn::ConnectionError) {
    match reason {
        quinn::ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            assert!(
                (0x100..=0x1ff).contains(&code),
                "expected a TLS alert code, got {code:#x}: {reason}"
            );
        }
        other => panic!("expected the server to close with a TLS alert, got {other:?}"),
    }
}

#[tokio::test]
async fn endpoints_authenticate_each_other() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let a = start_node(&certs.node(&ca, "a", "a")?, "a", loopback())?;
    let b = start_node(&certs.node(&ca, "b", "b")?, "b", loopback())?;

    eprintln!("phase: a dials b and b dials a");
    let seen_by_b = caller_id(&a.endpoint, "b", b.addr()).await?;
    let seen_by_a = caller_id(&b.endpoint, "a", a.addr()).await?;
    assert_eq!(seen_by_b, "a", "b should see a's node id");
    assert_eq!(seen_by_a, "b", "a should see b's node id");

    eprintln!("phase: each client sees the server's node id in its certificate");
    let a_to_b = a.endpoint.connection("b", b.addr()).await?;
    let b_to_a = b.endpoint.connection("a", a.addr()).await?;
    assert_eq!(server_node_id(&a_to_b), "b");
    assert_eq!(server_node_id(&b_to_a), "a");
    assert_eq!(
        a_to_b.handshake_data().and_then(|data| {
            data.downcast::<quinn::crypto::rustls::HandshakeData>()
                .ok()
                .and_then(|data| data.protocol)
        }),
        Some(dispotify_transport::ALPN_PROTOCOL.to_vec())
    );
    Ok(())
}

#[tokio::test]
async fn identity_load_rejects_wrong_node_id() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let dir = certs.node(&ca, "b", "b")?;

    let err = TlsIdentity::load(&dir, "c").unwrap_err();
    match &err {
        TransportError::LocalIdentityMismatch {
            expected,
            presented,
            ..
        } => {
            assert_eq!(expected, "c");
            assert_eq!(presented, "b");
        }
        other => panic!("expected LocalIdentityMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("\"b\""), "{err}");
    assert_eq!(TlsIdentity::load(&dir, "b")?.node_id(), "b");
    Ok(())
}

#[tokio::test]
async fn identity_load_reports_missing_files() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let err = TlsIdentity::load(&certs.root.path().join("nowhere"), "a").unwrap_err();
    assert!(
        matches!(err, TransportError::LoadIdentity { .. }),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn dial_rejects_wrong_node_id() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let a = start_node(&certs.node(&ca, "a", "a")?, "a", loopback())?;
    let b = start_node(&certs.node(&ca, "b", "b")?, "b", loopback())?;

    let err = a.endpoint.connection("c", b.addr()).await.unwrap_err();
    match err {
        TransportError::PeerIdentityMismatch {
            addr,
            expected,
            presented,
        } => {
            assert_eq!(addr, b.addr());
            assert_eq!(expected, "c");
            assert_eq!(presented, "b");
        }
        other => panic!("expected PeerIdentityMismatch, got {other:?}"),
    }
    assert_eq!(b.counts.rpc_streams.load(Ordering::SeqCst), 0);

    // The failed dial is not cached: the right id still connects.
    assert_eq!(echo(&a.endpoint, "b", b.addr(), "hi").await?, "hi");
    Ok(())
}

#[tokio::test]
async fn bulk_dial_rejects_wrong_node_id() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let a = start_node(&certs.node(&ca, "a", "a")?, "a", loopback())?;
    let b = start_node(&certs.node(&ca, "b", "b")?, "b", loopback())?;

    let err = a
        .endpoint
        .open_stream("c", b.addr(), StreamKind::Bulk)
        .await
        .unwrap_err();
    match err {
        TransportError::PeerIdentityMismatch {
            expected,
            presented,
            ..
        } => {
            assert_eq!(expected, "c");
            assert_eq!(presented, "b");
        }
        other => panic!("expected PeerIdentityMismatch, got {other:?}"),
    }
    assert_eq!(b.counts.bulk_streams.load(Ordering::SeqCst), 0);

    eprintln!("phase: the bulk connection to the right id proves both sides");
    let bulk = a
        .endpoint
        .connection_for("b", b.addr(), StreamKind::Bulk)
        .await?;
    assert_eq!(server_node_id(&bulk), "b");
    let receipt = send_bulk(&a.endpoint, "b", b.addr(), 9, 2, 1024).await?;
    assert_eq!(receipt.first_bad_chunk, None);
    assert_eq!(b.counts.bulk_peers()?, vec!["a".to_owned()]);
    Ok(())
}

#[tokio::test]
async fn server_from_other_ca_is_rejected() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let rogue_ca = certs.ca("rogue-ca")?;
    let a = start_node(&certs.node(&ca, "a", "a")?, "a", loopback())?;
    let rogue_b = start_node(&certs.node(&rogue_ca, "b", "rogue-b")?, "b", loopback())?;

    let err = a
        .endpoint
        .connection("b", rogue_b.addr())
        .await
        .unwrap_err();
    match &err {
        TransportError::Tls { peer, source, .. } => {
            assert_eq!(peer, "b");
            // Both CAs carry the same subject name, so path building finds
            // the cluster CA as issuer and the signature check fails.
            assert!(
                matches!(
                    source,
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::UnknownIssuer
                            | rustls::CertificateError::BadSignature
                    )
                ),
                "{err}"
            );
        }
        other => panic!("expected Tls, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn client_from_other_ca_is_rejected() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let rogue_ca = certs.ca("rogue-ca")?;
    let b = start_node(&certs.node(&ca, "b", "b")?, "b", loopback())?;

    // The rogue client trusts the cluster CA, so it accepts b, but its own
    // certificate comes from another CA.
    let rogue_dir = certs.node(&rogue_ca, "a", "rogue-a")?;
    std::fs::copy(ca.join("ca.pem"), rogue_dir.join("ca.pem"))?;
    let rogue_a = start_node(&rogue_dir, "a", loopback())?;

    let result = tokio::time::timeout(
        Duration::from_secs(10),
        echo(&rogue_a.endpoint, "b", b.addr(), "let me in"),
    )
    .await?;
    let err = result.expect_err("a client with a certificate from another CA must be rejected");
    eprintln!("rejected as expected: {err:#}");
    assert_eq!(b.counts.rpc_streams.load(Ordering::SeqCst), 0);

    eprintln!("phase: its bulk connection is rejected the same way");
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        send_bulk(&rogue_a.endpoint, "b", b.addr(), 1, 1, 1024),
    )
    .await?;
    assert!(
        result.is_err(),
        "a bulk stream from another CA's client must fail"
    );
    assert_eq!(b.counts.bulk_streams.load(Ordering::SeqCst), 0);

    let reason = close_reason(&rogue_a.endpoint, "b", b.addr()).await;
    assert_tls_alert(&reason);
    Ok(())
}

#[tokio::test]
async fn expired_server_certificate_is_rejected() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let a = start_node(&certs.node(&ca, "a", "a")?, "a", loopback())?;
    let expired_dir = certs.node_with_validity(&ca, "b", "expired-b", expired_validity())?;
    let expired_b = start_node(&expired_dir, "b", loopback())?;

    let err = a
        .endpoint
        .connection("b", expired_b.addr())
        .await
        .unwrap_err();
    match &err {
        TransportError::Tls {
            source: rustls::Error::InvalidCertificate(cert_error),
            ..
        } => assert!(
            matches!(
                cert_error,
                rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. }
            ),
            "expected an expiry error, got {cert_error:?}"
        ),
        other => panic!("expected Tls with an expired certificate, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn expired_client_certificate_is_rejected() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let b = start_node(&certs.node(&ca, "b", "b")?, "b", loopback())?;
    let expired_dir = certs.node_with_validity(&ca, "a", "expired-a", expired_validity())?;
    let expired_a = start_node(&expired_dir, "a", loopback())?;

    let result = tokio::time::timeout(
        Duration::from_secs(10),
        echo(&expired_a.endpoint, "b", b.addr(), "let me in"),
    )
    .await?;
    assert!(
        result.is_err(),
        "a client with an expired certificate must be rejected"
    );
    assert_eq!(b.counts.rpc_streams.load(Ordering::SeqCst), 0);

    let reason = close_reason(&expired_a.endpoint, "b", b.addr()).await;
    assert_tls_alert(&reason);
    // TLS alert 45 is certificate_expired (RFC 8446, section 6).
    let certificate_expired = quinn::TransportErrorCode::crypto(45);
    assert!(
        matches!(&reason, quinn::ConnectionError::ConnectionClosed(close) if close.error_code == certificate_expired),
        "expected alert certificate_expired, got {reason}"
    );
    Ok(())
}

#[tokio::test]
async fn dial_any_reports_presented_node_id() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let rogue_ca = certs.ca("rogue-ca")?;
    let a = start_node(&certs.node(&ca, "a", "a")?, "a", loopback())?;
    let b = start_node(&certs.node(&ca, "b", "b")?, "b", loopback())?;
    let rogue = start_node(&certs.node(&rogue_ca, "r", "rogue")?, "r", loopback())?;

    let (peer, connection) = a.endpoint.connection_any(b.addr()).await?;
    assert_eq!(peer.as_str(), "b");
    assert_eq!(server_node_id(&connection), "b");

    let err = a.endpoint.connection_any(rogue.addr()).await.unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err:?}");
    Ok(())
}
