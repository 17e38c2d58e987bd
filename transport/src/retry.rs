//! Retries with capped exponential backoff and full jitter, and timeouts.
//!
//! [`retry`] repeats an operation only while its error reports itself as
//! transient ([`Transient`]). Before attempt `n + 1` it sleeps a random time between
//! zero and `min(max_backoff, initial_backoff * 2^(n - 1))` ("full jitter"),
//! so peers that failed together do not retry in lockstep.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::error::TransportError;

/// Default number of attempts, the first one included.
///
/// Three retries ride out a peer restart or a leader change; more would hold
/// a caller for seconds on a peer that is really gone.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;

/// Default upper bound of the delay before the first retry.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Default cap on the delay between two attempts.
///
/// Two seconds is shorter than an election timeout, so a retrying caller
/// notices a new leader soon after it is elected.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How often and how patiently an operation is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included; at least 1.
    pub max_attempts: u32,
    /// Upper bound of the delay before the first retry.
    pub initial_backoff: Duration,
    /// Cap on the delay between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

impl RetryPolicy {
    /// Checks that the policy makes at least one attempt and that its cap is
    /// not below its initial backoff.
    pub fn validate(&self) -> Result<(), TransportError> {
        if self.max_attempts == 0 {
            return Err(TransportError::InvalidConfig {
                field: "retry.max_attempts",
                problem: "must be at least 1",
            });
        }
        if self.max_backoff < self.initial_backoff {
            return Err(TransportError::InvalidConfig {
                field: "retry.max_backoff",
                problem: "must not be shorter than retry.initial_backoff",
            });
        }
        Ok(())
    }
}

/// Errors that know whether repeating the operation may succeed.
pub trait Transient {
    /// Returns true when the same call may succeed later (timeouts, lost
    /// connections, a peer that is restarting), false when it will fail again
    /// (bad certificate, oversized frame, invalid configuration).
    fn is_transient(&self) -> bool;
}

impl Transient for TransportError {
    fn is_transient(&self) -> bool {
        match self {
            Self::ConnectFailed { source, .. } | Self::ConnectionLost { source, .. } => {
                connection_error_is_transient(source)
            }
            Self::TimedOut { .. } | Self::StreamClosed { .. } => true,
            Self::StreamWrite { source } => match source {
                quinn::WriteError::ConnectionLost(error) => connection_error_is_transient(error),
                quinn::WriteError::ClosedStream => false,
                _ => true,
            },
            Self::StreamRead { source } => match source {
                quinn::ReadError::ConnectionLost(error) => connection_error_is_transient(error),
                quinn::ReadError::ClosedStream | quinn::ReadError::IllegalOrderedRead => false,
                _ => true,
            },
            Self::LoadIdentity { .. }
            | Self::LocalIdentityMismatch { .. }
            | Self::TlsConfig { .. }
            | Self::InvalidConfig { .. }
            | Self::Bind { .. }
            | Self::AlreadyServing
            | Self::EndpointClosed
            | Self::DialRejected { .. }
            | Self::PeerIdentityMismatch { .. }
            | Self::Tls { .. }
            | Self::FrameTooLarge { .. }
            | Self::Codec { .. }
            | Self::UnknownStreamKind { .. } => false,
        }
    }
}

/// Returns false for closes that repeat on every attempt: a TLS alert from
/// the peer (it rejected our certificate), a protocol version mismatch, or
/// our own endpoint shutting down.
fn connection_error_is_transient(error: &quinn::ConnectionError) -> bool {
    use quinn::ConnectionError as E;
    match error {
        E::TransportError(transport) => !is_tls_alert(transport.code),
        E::ConnectionClosed(close) => !is_tls_alert(close.error_code),
        E::VersionMismatch | E::LocallyClosed | E::CidsExhausted => false,
        E::ApplicationClosed(_) | E::Reset | E::TimedOut => true,
    }
}

/// QUIC carries TLS alerts as transport error codes 0x100 to 0x1ff
/// (RFC 9001, section 4.8).
fn is_tls_alert(code: quinn::TransportErrorCode) -> bool {
    (0x100..=0x1ff).contains(&u64::from(code))
}

impl Transient for tarpc::client::RpcError {
    fn is_transient(&self) -> bool {
        use tarpc::client::RpcError as E;
        match self {
            E::Shutdown | E::Send(_) | E::Channel(_) | E::DeadlineExceeded => true,
            E::Server(_) => false,
        }
    }
}

/// Returns the delay before the retry that follows failed attempt number
/// `attempt` (1 for the first attempt).
///
/// The delay is drawn uniformly from zero to
/// `min(max_backoff, initial_backoff * 2^(attempt - 1))`, both ends included.
/// Pure apart from `rng`, so tests can seed it.
pub fn backoff_delay(policy: &RetryPolicy, attempt: u32, rng: &mut impl Rng) -> Duration {
    let doublings = attempt.saturating_sub(1);
    let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
    let ceiling = policy
        .initial_backoff
        .saturating_mul(factor)
        .min(policy.max_backoff);
    if ceiling.is_zero() {
        return Duration::ZERO;
    }
    rng.gen_range(Duration::ZERO..=ceiling)
}

/// Runs `call` until it succeeds, fails with an error that is not
/// transient, or has been tried `policy.max_attempts` times.
///
/// `operation` names the call in the debug log line written once per retry.
/// The call should bound itself with a timeout (see [`with_timeout`]),
/// because `retry` only limits the number of attempts.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    operation: &'static str,
    mut call: F,
) -> Result<T, E>
where
    E: Transient + fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let max_attempts = policy.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        let error = match call().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if attempt >= max_attempts || !error.is_transient() {
            return Err(error);
        }

        let delay = backoff_delay(policy, attempt, &mut rand::thread_rng());
        tracing::debug!(
            operation,
            attempt,
            max_attempts,
            delay = ?delay,
            error = %error,
            "retrying after transient error"
        );
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// The error of [`with_timeout`]: the operation did not finish in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{operation} timed out after {timeout:?}")]
pub struct Elapsed {
    pub operation: &'static str,
    pub timeout: Duration,
}

/// Runs `future` for at most `timeout`; `operation` names it in the error.
pub async fn with_timeout<F: Future>(
    timeout: Duration,
    operation: &'static str,
    future: F,
) -> Result<F::Output, Elapsed> {
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| Elapsed { operation, timeout })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    const SEED: u64 = 0x5eed_d15b;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }

    /// Returns the largest delay seen in `samples` draws for `attempt`.
    fn max_delay(policy: &RetryPolicy, attempt: u32, samples: usize, rng: &mut StdRng) -> Duration {
        (0..samples)
            .map(|_| backoff_delay(policy, attempt, rng))
            .max()
            .unwrap_or_default()
    }

    #[test]
    fn backoff_stays_within_jitter_bounds() {
        let policy = policy();
        let mut rng = StdRng::seed_from_u64(SEED);
        for attempt in 1..=8 {
            let ceiling = (policy.initial_backoff * 2u32.pow(attempt - 1)).min(policy.max_backoff);
            for _ in 0..1000 {
                let delay = backoff_delay(&policy, attempt, &mut rng);
                assert!(
                    delay <= ceiling,
                    "attempt {attempt}: {delay:?} > {ceiling:?}"
                );
            }
        }
    }

    #[test]
    fn backoff_is_capped() {
        let policy = policy();
        let mut rng = StdRng::seed_from_u64(SEED);
        for attempt in [6, 7, 10, 31, 32, 33, 1000, u32::MAX] {
            let max_seen = max_delay(&policy, attempt, 2000, &mut rng);
            assert!(
                max_seen <= policy.max_backoff,
                "attempt {attempt}: {max_seen:?}"
            );
            // With 2000 uniform draws the largest is within 1% of the cap
            // except with probability 0.99^2000, about 2e-9.
            assert!(
                max_seen >= policy.max_backoff.mul_f64(0.99),
                "attempt {attempt}: {max_seen:?} never came near the cap"
            );
        }
    }

    #[test]
    fn backoff_ceiling_doubles_per_attempt() {
        let policy = policy();
        let mut rng = StdRng::seed_from_u64(SEED);
        for (attempt, expected_ceiling_ms) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1600)] {
            let ceiling = Duration::from_millis(expected_ceiling_ms);
            let max_seen = max_delay(&policy, attempt, 2000, &mut rng);
            assert!(
                max_seen <= ceiling,
                "attempt {attempt}: {max_seen:?} > {ceiling:?}"
            );
            assert!(
                max_seen >= ceiling.mul_f64(0.99),
                "attempt {attempt}: {max_seen:?} far below {ceiling:?}"
            );
        }
    }

    #[test]
    fn backoff_jitter_spreads_delays() {
        let policy = policy();
        let mut rng = StdRng::seed_from_u64(SEED);
        let delays: Vec<Duration> = (0..1000)
            .map(|_| backoff_delay(&policy, 4, &mut rng))
            .collect();
        let ceiling = Duration::from_millis(800);
        let below_quarter = delays.iter().filter(|d| **d < ceiling / 4).count();
        let above_three_quarters = delays.iter().filter(|d| **d > ceiling * 3 / 4).count();
        // Uniform draws put about 250 of 1000 in each outer quarter.
        assert!(
            (150..350).contains(&below_quarter),
            "{below_quarter} below a quarter"
        );
        assert!(
            (150..350).contains(&above_three_quarters),
            "{above_three_quarters} above three quarters"
        );
    }

    #[test]
    fn backoff_with_zero_initial_is_zero() {
        let policy = RetryPolicy {
            initial_backoff: Duration::ZERO,
            ..policy()
        };
        let mut rng = StdRng::seed_from_u64(SEED);
        assert_eq!(backoff_delay(&policy, 3, &mut rng), Duration::ZERO);
    }

    #[derive(Debug)]
    struct TestError {
        transient: bool,
    }

    impl fmt::Display for TestError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "test error (transient: {})", self.transient)
        }
    }

    impl Transient for TestError {
        fn is_transient(&self) -> bool {
            self.transient
        }
    }

    fn fast_policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn retry_repeats_transient_errors_until_success() {
        let calls = AtomicU32::new(0);
        let result = retry(&fast_policy(5), "test", || async {
            let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if call < 3 {
                Err(TestError { transient: true })
            } else {
                Ok(call)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn retry_stops_after_max_attempts() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry(&fast_policy(4), "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(TestError { transient: true })
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn retry_gives_up_on_permanent_error() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = retry(&fast_policy(5), "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(TestError { transient: false })
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn transport_errors_classify_as_transient_or_not() {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 4000));
        let closed_with = |error_code| {
            quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
                error_code,
                frame_type: None,
                reason: bytes::Bytes::new(),
            })
        };
        let cases = [
            (
                "connect timed out",
                TransportError::TimedOut {
                    peer: "b".into(),
                    operation: "connect",
                    timeout: Duration::from_secs(1),
                },
                true,
            ),
            (
                "idle timeout",
                TransportError::ConnectFailed {
                    peer: "b".into(),
                    addr,
                    source: quinn::ConnectionError::TimedOut,
                },
                true,
            ),
            (
                "peer restarted",
                TransportError::ConnectionLost {
                    peer: "b".into(),
                    source: quinn::ConnectionError::Reset,
                },
                true,
            ),
            (
                "protocol violation",
                TransportError::ConnectionLost {
                    peer: "b".into(),
                    source: closed_with(quinn::TransportErrorCode::PROTOCOL_VIOLATION),
                },
                true,
            ),
            (
                "TLS alert bad_certificate",
                TransportError::ConnectionLost {
                    peer: "b".into(),
                    source: closed_with(quinn::TransportErrorCode::crypto(42)),
                },
                false,
            ),
            (
                "identity mismatch",
                TransportError::PeerIdentityMismatch {
                    addr,
                    expected: "c".into(),
                    presented: "b".into(),
                },
                false,
            ),
            (
                "frame too large",
                TransportError::FrameTooLarge {
                    length_bytes: 10,
                    max_bytes: 5,
                },
                false,
            ),
            ("endpoint closed", TransportError::EndpointClosed, false),
        ];
        for (name, error, expected) in cases {
            assert_eq!(error.is_transient(), expected, "{name}: {error}");
        }
    }

    #[tokio::test]
    async fn with_timeout_reports_operation() {
        let result = with_timeout(Duration::from_millis(10), "sleeping", async {
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        assert_eq!(
            result,
            Err(Elapsed {
                operation: "sleeping",
                timeout: Duration::from_millis(10)
            })
        );
        let finished = with_timeout(Duration::from_secs(5), "instant", async { 7 }).await;
        assert_eq!(finished, Ok(7));
    }
}
