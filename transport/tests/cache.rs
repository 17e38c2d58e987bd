//! The connection cache: shared dials, re-dials and shutdown.

mod common;

use std::time::Duration;

use common::{echo, loopback, start_node, start_node_when_free, CertDirs};
use dispotify_transport::TransportError;

/// How long a closed endpoint may take to release its UDP port.
const PORT_RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_dial() -> anyhow::Result<()> {
    const CALLERS: usize = 32;
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let a = start_node(&certs.node(&ca, "a", "a")?, "a", loopback())?;
    let b = start_node(&certs.node(&ca, "b", "b")?, "b", loopback())?;
    let b_addr = b.addr();

    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let endpoint = a.endpoint.clone();
        callers.spawn(async move { endpoint.connection("b", b_addr).await });
    }
    let mut stable_ids = Vec::new();
    while let Some(joined) = callers.join_next().await {
        stable_ids.push(joined??.stable_id());
    }

    assert_eq!(stable_ids.len(), CALLERS);
    stable_ids.dedup();
    assert_eq!(
        stable_ids.len(),
        1,
        "every caller should get the same connection"
    );
    Ok(())
}

#[tokio::test]
async fn cache_redials_after_peer_restarts() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let b_dir = certs.node(&ca, "b", "b")?;
    let a = start_node(&certs.node(&ca, "a", "a")?, "a", loopback())?;
    let b = start_node(&b_dir, "b", loopback())?;
    let b_addr = b.addr();

    eprintln!("phase: first connection");
    assert_eq!(echo(&a.endpoint, "b", b_addr, "one").await?, "one");
    let first = a.endpoint.connection("b", b_addr).await?;

    eprintln!("phase: b closes, is dropped and binds the same address again");
    b.endpoint.close();
    b.endpoint.wait_idle().await;
    drop(b);
    let closed = tokio::time::timeout(Duration::from_secs(5), first.closed()).await?;
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "{closed:?}"
    );
    let b = start_node_when_free(&b_dir, "b", b_addr, PORT_RELEASE_TIMEOUT).await?;
    assert_eq!(b.addr(), b_addr);

    eprintln!("phase: the next call dials the new b transparently");
    assert_eq!(echo(&a.endpoint, "b", b_addr, "two").await?, "two");
    let second = a.endpoint.connection("b", b_addr).await?;
    assert_ne!(first.stable_id(), second.stable_id());
    Ok(())
}

#[tokio::test]
async fn cache_replaces_connection_on_address_change() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let b_dir = certs.node(&ca, "b", "b")?;
    let a = start_node(&certs.node(&ca, "a", "a")?, "a", loopback())?;
    let old_b = start_node(&b_dir, "b", loopback())?;
    let new_b = start_node(&b_dir, "b", loopback())?;

    let old = a.endpoint.connection("b", old_b.addr()).await?;
    assert_eq!(old.remote_address(), old_b.addr());

    let new = a.endpoint.connection("b", new_b.addr()).await?;
    assert_eq!(new.remote_address(), new_b.addr());
    assert_ne!(old.stable_id(), new.stable_id());

    let reason = tokio::time::timeout(Duration::from_secs(5), old.closed()).await?;
    assert!(
        matches!(reason, quinn::ConnectionError::LocallyClosed),
        "the replaced connection should be closed, got {reason:?}"
    );
    assert_eq!(
        echo(&a.endpoint, "b", new_b.addr(), "moved").await?,
        "moved"
    );
    Ok(())
}

#[tokio::test]
async fn closed_endpoint_rejects_dials() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let a = start_node(&certs.node(&ca, "a", "a")?, "a", loopback())?;
    let b = start_node(&certs.node(&ca, "b", "b")?, "b", loopback())?;
    assert_eq!(echo(&b.endpoint, "a", a.addr(), "before").await?, "before");

    a.endpoint.close();
    tokio::time::timeout(Duration::from_secs(10), a.endpoint.wait_idle()).await?;

    let err = a.endpoint.connection("b", b.addr()).await.unwrap_err();
    assert!(matches!(err, TransportError::EndpointClosed), "{err:?}");
    let err = b.endpoint.connection("a", a.addr()).await;
    assert!(
        err.is_err(),
        "a closed endpoint must not accept connections"
    );
    Ok(())
}
