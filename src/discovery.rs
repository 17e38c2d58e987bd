//! Discovery: address resolution with a cached fallback, and health checks
//! of every member over QUIC.
//!
//! Member addresses may be DNS names (Swarm's `tasks.<service>` for seeds,
//! service names for members). Each resolution is cached for the peer cache
//! TTL; when resolution fails, the last cached address keeps serving, so a
//! DNS hiccup does not cut a node off from its peers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cached result of resolving one `host:port`.
#[derive(Clone, Debug)]
struct CachedAddr {
    addrs: Vec<SocketAddr>,
    resolved_at: Instant,
}

/// What the last health checks of one member found.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum PeerHealth {
    #[default]
    Unknown,
    Up {
        rtt: Duration,
    },
    Down {
        consecutive_failures: u32,
    },
}

impl PeerHealth {
    /// The label shown in `/cluster/status`.
    pub fn label(&self) -> &'static str {
        match self {
            PeerHealth::Unknown => "unknown",
            PeerHealth::Up { .. } => "up",
            PeerHealth::Down { .. } => "down",
        }
    }

    pub fn rtt(&self) -> Option<Duration> {
        match self {
            PeerHealth::Up { rtt } => Some(*rtt),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve {addr}: {source}")]
    Lookup {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} resolved to no address")]
    Empty { addr: String },
}

/// Resolved addresses and member health, shared by the Raft network, the
/// replication manager and the health-check worker.
#[derive(Debug)]
pub struct Discovery {
    ttl: Duration,
    cache: Mutex<HashMap<String, CachedAddr>>,
    health: Mutex<HashMap<String, PeerHealth>>,
    /// When each member that is down now failed its first check in a row.
    down_since: Mutex<HashMap<String, Instant>>,
}

impl Discovery {
    pub fn new(ttl: Duration) -> Arc<Discovery> {
        Arc::new(Discovery {
            ttl,
            cache: Mutex::new(HashMap::new()),
            health: Mutex::new(HashMap::new()),
            down_since: Mutex::new(HashMap::new()),
        })
    }

    /// Resolves `host:port` to socket addresses: a literal address directly,
    /// a name through DNS with a TTL cache that keeps serving when DNS fails.
    pub async fn resolve_all(&self, addr: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Ok(literal) = addr.parse::<SocketAddr>() {
            return Ok(vec![literal]);
        }
        let cached = self.cached(addr);
        if let Some(entry) = &cached {
            if entry.resolved_at.elapsed() < self.ttl {
                return Ok(entry.addrs.clone());
            }
        }
        let looked_up = tokio::net::lookup_host(addr)
            .await
            .map(|found| found.collect::<Vec<_>>());
        let addrs = choose_addrs(addr, looked_up, cached)?;
        self.lock_cache().insert(
            addr.to_string(),
            CachedAddr {
                addrs: addrs.clone(),
                resolved_at: Instant::now(),
            },
        );
        Ok(addrs)
    }

    /// Resolves `host:port` to its first socket address.
    pub async fn resolve(&self, addr: &str) -> Result<SocketAddr, ResolveError> {
        let addrs = self.resolve_all(addr).await?;
        addrs.first().copied().ok_or(ResolveError::Empty {
            addr: addr.to_string(),
        })
    }

    fn cached(&self, addr: &str) -> Option<CachedAddr> {
        self.lock_cache().get(addr).cloned()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedAddr>> {
        // A panic while holding this lock cannot leave the map inconsistent:
        // every critical section is a single insert or lookup.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_health(&self) -> std::sync::MutexGuard<'_, HashMap<String, PeerHealth>> {
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The last known health of `node_id`; this node itself is always up.
    pub fn health(&self, node_id: &str, is_self: bool) -> PeerHealth {
        if is_self {
            return PeerHealth::Up {
                rtt: Duration::ZERO,
            };
        }
        self.lock_health().get(node_id).copied().unwrap_or_default()
    }

    fn lock_down_since(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.down_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long `node_id` has failed every health check, or `None` when its
    /// last check succeeded or it was never checked.
    pub fn down_for(&self, node_id: &str) -> Option<Duration> {
        self.lock_down_since()
            .get(node_id)
            .map(|since| since.elapsed())
    }

    /// Records a successful health check. Returns the previous state.
    pub fn record_up(&self, node_id: &str, rtt: Duration) -> PeerHealth {
        self.lock_down_since().remove(node_id);
        self.lock_health()
            .insert(node_id.to_string(), PeerHealth::Up { rtt })
            .unwrap_or_default()
    }

    /// Records a failed health check. Returns the new state.
    pub fn record_down(&self, node_id: &str) -> PeerHealth {
        self.lock_down_since()
            .entry(node_id.to_string())
            .or_insert_with(Instant::now);
        let mut health = self.lock_health();
        let failures = match health.get(node_id) {
            Some(PeerHealth::Down {
                consecutive_failures,
            }) => consecutive_failures + 1,
            _ => 1,
        };
        let state = PeerHealth::Down {
            consecutive_failures: failures,
        };
        health.insert(node_id.to_string(), state);
        state
    }

    /// Whether the member was reachable at its last check; members never
    /// checked count as reachable so a fresh node still tries them.
    pub fn is_reachable(&self, node_id: &str) -> bool {
        !matches!(
            self.lock_health().get(node_id),
            Some(PeerHealth::Down { .. })
        )
    }
}

/// Picks the fresh DNS answer when there is one, else the cached addresses,
/// logging the fallback once per failed lookup.
fn choose_addrs(
    addr: &str,
    looked_up: std::io::Result<Vec<SocketAddr>>,
    cached: Option<CachedAddr>,
) -> Result<Vec<SocketAddr>, ResolveError> {
    match (looked_up, cached) {
        (Ok(found), _) if !found.is_empty() => Ok(found),
        (Ok(_), Some(entry)) => Ok(entry.addrs),
        (Ok(_), None) => Err(ResolveError::Empty {
            addr: addr.to_string(),
        }),
        (Err(source), Some(entry)) => {
            tracing::warn!(addr, error = %source, "dns resolution failed, using cached address");
            Ok(entry.addrs)
        }
        (Err(source), None) => Err(ResolveError::Lookup {
            addr: addr.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literal_address_resolves_without_dns() {
        let discovery = Discovery::new(Duration::from_secs(30));
        let addr = discovery.resolve("127.0.0.1:9000").await.unwrap();
        assert_eq!(addr, "127.0.0.1:9000".parse().unwrap());
    }

    #[tokio::test]
    async fn localhost_name_resolves_and_is_cached() {
        let discovery = Discovery::new(Duration::from_secs(30));
        let addrs = discovery.resolve_all("localhost:9000").await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
        assert!(discovery.cached("localhost:9000").is_some());
    }

    #[test]
    fn cached_addresses_serve_when_dns_fails() {
        let cached = CachedAddr {
            addrs: vec!["127.0.0.2:9000".parse().unwrap()],
            resolved_at: Instant::now(),
        };
        let failed = Err(std::io::Error::other("resolver unreachable"));
        let addrs = choose_addrs("tasks.dispotify:9000", failed, Some(cached.clone())).unwrap();
        assert_eq!(addrs, cached.addrs);
        let empty =
            choose_addrs("tasks.dispotify:9000", Ok(Vec::new()), Some(cached.clone())).unwrap();
        assert_eq!(empty, cached.addrs);
    }

    #[test]
    fn fresh_answer_wins_over_cache() {
        let cached = CachedAddr {
            addrs: vec!["127.0.0.2:9000".parse().unwrap()],
            resolved_at: Instant::now(),
        };
        let fresh: Vec<SocketAddr> = vec!["127.0.0.3:9000".parse().unwrap()];
        assert_eq!(
            choose_addrs("x:9000", Ok(fresh.clone()), Some(cached)).unwrap(),
            fresh
        );
    }

    #[test]
    fn failure_without_cache_is_an_error() {
        let failed = Err(std::io::Error::other("resolver unreachable"));
        assert!(matches!(
            choose_addrs("x:9000", failed, None),
            Err(ResolveError::Lookup { .. })
        ));
        assert!(matches!(
            choose_addrs("x:9000", Ok(Vec::new()), None),
            Err(ResolveError::Empty { .. })
        ));
    }

    #[test]
    fn health_counts_consecutive_failures() {
        let discovery = Discovery::new(Duration::from_secs(30));
        assert_eq!(discovery.health("b", false), PeerHealth::Unknown);
        discovery.record_down("b");
        assert_eq!(
            discovery.record_down("b"),
            PeerHealth::Down {
                consecutive_failures: 2
            }
        );
        assert!(!discovery.is_reachable("b"));
        let down_for = discovery.down_for("b");
        assert!(down_for.is_some(), "{down_for:?}");
        std::thread::sleep(Duration::from_millis(20));
        discovery.record_down("b");
        assert!(discovery.down_for("b") >= down_for.map(|d| d + Duration::from_millis(20)));
        discovery.record_up("b", Duration::from_millis(3));
        assert!(discovery.is_reachable("b"));
        assert_eq!(discovery.down_for("b"), None);
        assert_eq!(discovery.health("a", true).label(), "up");
    }
}
