//! The connection cache: shared dials, re-dials and shutdown.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{echo, loopback, send_bulk, start_node, start_node_when_free, CertDirs};
use dispotify_transport::{StreamKind, TransportError};

/// How long a closed endpoint may take to release its UDP port.
const PORT_RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_dial_per_kind() -> anyhow::Result<()> {
    const CALLERS_PER_KIND: usize = 32;
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let a = start_node(&certs.node(&ca, "a", "a")?, "a", loopback())?;
    let b = start_node(&certs.node(&ca, "b", "b")?, "b", loopback())?;
    let b_addr = b.addr();

    eprintln!("phase: {CALLERS_PER_KIND} callers per stream kind ask for b at once");
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..2 * CALLERS_PER_KIND {
        let kind = if caller % 2 == 0 {
            StreamKind::Rpc
        } else {
            StreamKind::Bulk
        };
        let endpoint = a.endpoint.clone();
        callers.spawn(async move {
            let connection = endpoint.connection_for("b", b_addr, kind).await;
            (kind, connection)
        });
    }
    let mut rpc_ids = HashSet::new();
    let mut bulk_ids = HashSet::new();
    while let Some(joined) = callers.join_next().await {
        let (kind, connection) = joined?;
        let stable_id = connection?.stable_id();
        match kind {
            StreamKind::Rpc => rpc_ids.insert(stable_id),
            _ => bulk_ids.insert(stable_id),
        };
    }

    assert_eq!(
        rpc_ids.len(),
        1,
        "every RPC caller should get one connection"
    );
    assert_eq!(
        bulk_ids.len(),
        1,
        "every bulk caller should get one connection"
    );
    assert!(
        rpc_ids.is_disjoint(&bulk_ids),
        "RPC and bulk streams should have separate connections"
    );

    eprintln!("phase: connection() and open_stream() use the cached connection of their kind");
    let rpc_id = rpc_ids.into_iter().next();
    let bulk_id = bulk_ids.into_iter().next();
    assert_eq!(
        Some(a.endpoint.connection("b", b_addr).await?.stable_id()),
        rpc_id
    );
    let (_send, _recv) = a
        .endpoint
        .open_stream("b", b_addr, StreamKind::Bulk)
        .await?;
    assert_eq!(
        Some(
            a.endpoint
                .connection_for("b", b_addr, StreamKind::Bulk)
                .await?
                .stable_id()
        ),
        bulk_id
    );
    assert_eq!(
        b.endpoint.open_connections(),
        2,
        "b should have accepted exactly one connection per kind"
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

    eprintln!("phase: first RPC and bulk connections");
    assert_eq!(echo(&a.endpoint, "b", b_addr, "one").await?, "one");
    send_bulk(&a.endpoint, "b", b_addr, 1, 2, 1024).await?;
    let first_rpc = a.endpoint.connection("b", b_addr).await?;
    let first_bulk = a
        .endpoint
        .connection_for("b", b_addr, StreamKind::Bulk)
        .await?;

    eprintln!("phase: b closes, is dropped and binds the same address again");
    b.endpoint.close();
    b.endpoint.wait_idle().await;
    drop(b);
    for first in [&first_rpc, &first_bulk] {
        let closed = tokio::time::timeout(Duration::from_secs(5), first.closed()).await?;
        assert!(
            matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
            "{closed:?}"
        );
    }
    let b = start_node_when_free(&b_dir, "b", b_addr, PORT_RELEASE_TIMEOUT).await?;
    assert_eq!(b.addr(), b_addr);

    eprintln!("phase: the next RPC and bulk stream dial the new b transparently");
    assert_eq!(echo(&a.endpoint, "b", b_addr, "two").await?, "two");
    let receipt = send_bulk(&a.endpoint, "b", b_addr, 2, 2, 1024).await?;
    assert_eq!(receipt.first_bad_chunk, None);
    let second_rpc = a.endpoint.connection("b", b_addr).await?;
    let second_bulk = a
        .endpoint
        .connection_for("b", b_addr, StreamKind::Bulk)
        .await?;
    assert_ne!(first_rpc.stable_id(), second_rpc.stable_id());
    assert_ne!(first_bulk.stable_id(), second_bulk.stable_id());
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

    let old_rpc = a.endpoint.connection("b", old_b.addr()).await?;
    let old_bulk = a
        .endpoint
        .connection_for("b", old_b.addr(), StreamKind::Bulk)
        .await?;
    assert_eq!(old_rpc.remote_address(), old_b.addr());
    assert_eq!(old_bulk.remote_address(), old_b.addr());

    eprintln!("phase: an RPC connection to the new address replaces both kinds");
    let new = a.endpoint.connection("b", new_b.addr()).await?;
    assert_eq!(new.remote_address(), new_b.addr());
    assert_ne!(old_rpc.stable_id(), new.stable_id());
    for old in [&old_rpc, &old_bulk] {
        let reason = tokio::time::timeout(Duration::from_secs(5), old.closed()).await?;
        assert!(
            matches!(reason, quinn::ConnectionError::LocallyClosed),
            "the replaced connection should be closed, got {reason:?}"
        );
    }

    eprintln!("phase: both kinds work at the new address");
    assert_eq!(
        echo(&a.endpoint, "b", new_b.addr(), "moved").await?,
        "moved"
    );
    let receipt = send_bulk(&a.endpoint, "b", new_b.addr(), 3, 2, 1024).await?;
    assert_eq!(receipt.first_bad_chunk, None);
    let new_bulk = a
        .endpoint
        .connection_for("b", new_b.addr(), StreamKind::Bulk)
        .await?;
    assert_eq!(new_bulk.remote_address(), new_b.addr());
    assert_eq!(new_b.counts.bulk_streams.load(Ordering::SeqCst), 1);
    assert_eq!(old_b.counts.bulk_streams.load(Ordering::SeqCst), 0);
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

#[tokio::test]
async fn invalidate_drops_every_kind() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let a = start_node(&certs.node(&ca, "a", "a")?, "a", loopback())?;
    let b = start_node(&certs.node(&ca, "b", "b")?, "b", loopback())?;
    let b_addr = b.addr();

    let rpc = a.endpoint.connection("b", b_addr).await?;
    let bulk = a
        .endpoint
        .connection_for("b", b_addr, StreamKind::Bulk)
        .await?;
    a.endpoint.invalidate("b");

    let new_rpc = a.endpoint.connection("b", b_addr).await?;
    let new_bulk = a
        .endpoint
        .connection_for("b", b_addr, StreamKind::Bulk)
        .await?;
    assert_ne!(rpc.stable_id(), new_rpc.stable_id());
    assert_ne!(bulk.stable_id(), new_bulk.stable_id());
    Ok(())
}

#[tokio::test]
async fn closed_bulk_connection_leaves_rpc_connection() -> anyhow::Result<()> {
    let certs = CertDirs::new()?;
    let ca = certs.ca("ca")?;
    let a = start_node(&certs.node(&ca, "a", "a")?, "a", loopback())?;
    let b = start_node(&certs.node(&ca, "b", "b")?, "b", loopback())?;
    let b_addr = b.addr();

    let rpc = a.endpoint.connection("b", b_addr).await?;
    let bulk = a
        .endpoint
        .connection_for("b", b_addr, StreamKind::Bulk)
        .await?;
    bulk.close(0u32.into(), b"test closes the bulk connection");

    eprintln!("phase: the next bulk stream dials a new bulk connection");
    let receipt = send_bulk(&a.endpoint, "b", b_addr, 4, 2, 1024).await?;
    assert_eq!(receipt.first_bad_chunk, None);
    let new_bulk = a
        .endpoint
        .connection_for("b", b_addr, StreamKind::Bulk)
        .await?;
    assert_ne!(bulk.stable_id(), new_bulk.stable_id());

    eprintln!("phase: the RPC connection was not touched");
    assert_eq!(rpc.close_reason(), None);
    assert_eq!(echo(&a.endpoint, "b", b_addr, "still").await?, "still");
    assert_eq!(
        a.endpoint.connection("b", b_addr).await?.stable_id(),
        rpc.stable_id()
    );
    Ok(())
}
