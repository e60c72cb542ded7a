//! Bearer tokens and scopes. Tokens are compared in constant time (`subtle`), every
//! configured token is compared (no early exit), and no token is ever logged.
//!
//! Failed authentications are limited per peer address ([`PeerFailures`]): a peer that
//! spent its budget is refused without its token being compared, so that guessing runs
//! at the refill rate, and a refusal says nothing about the token it carried.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::config::{Scope, TokenConfig};

/// Why a request is not authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No token, or an unknown one: 401.
    Unauthenticated,
    /// A known token without the needed scope: 403.
    Forbidden,
    /// The peer's address failed to authenticate too often: refused without looking at
    /// the token, for (at least) this long.
    PeerLimited { retry_after: Duration },
}

/// A token's request budget (GCRA), on `std::time::Instant`: the clock the rest of the
/// service uses.
type Limiter = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::MonotonicClock,
    governor::middleware::NoOpMiddleware<std::time::Instant>,
>;

pub struct Auth {
    tokens: Vec<TokenConfig>,
    /// One request-rate limiter per token (same index), if limited.
    limiters: Vec<Option<Limiter>>,
    /// Failed authentications per peer address; `None`: not limited.
    failures: Option<PeerFailures>,
}

/// Which token a request presented (an index into the configured tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenId(usize);

impl Auth {
    /// `requests_per_second` per token (0 = no limit), in bursts of up to a second's
    /// worth.
    pub fn new(tokens: Vec<TokenConfig>, requests_per_second: u32) -> Self {
        let limiters = tokens
            .iter()
            .map(|_| {
                std::num::NonZeroU32::new(requests_per_second).map(|rate| {
                    governor::RateLimiter::direct_with_clock(
                        governor::Quota::per_second(rate),
                        governor::clock::MonotonicClock,
                    )
                })
            })
            .collect();
        Auth {
            tokens,
            limiters,
            failures: None,
        }
    }

    /// Limits failed authentications per peer address: `max` in a burst, `max` per
    /// `window` after that (0 = no limit).
    pub fn with_peer_failures(mut self, max: u32, window: Duration) -> Self {
        self.failures = PeerFailures::new(max, window);
        self
    }

    /// [`Auth::check`] for a request from `peer` (`None`: unknown, not limited). A peer
    /// that is refused gets [`AuthError::PeerLimited`] before its token is looked at; an
    /// unknown or missing token counts against its address.
    pub fn check_from(
        &self,
        peer: Option<IpAddr>,
        presented: Option<&str>,
        scope: Scope,
    ) -> Result<TokenId, AuthError> {
        let failures = self.failures.as_ref().zip(peer);
        if let Some((failures, peer)) = failures {
            failures.admit(peer)?;
        }
        let checked = self.check(presented, scope);
        if let (Err(AuthError::Unauthenticated), Some((failures, peer))) = (&checked, failures) {
            failures.failed(peer);
        }
        checked
    }

    /// Whether `peer` is refused now (`Err(PeerLimited)`), without counting anything.
    pub fn admit(&self, peer: IpAddr) -> Result<(), AuthError> {
        match &self.failures {
            Some(failures) => failures.admit(peer),
            None => Ok(()),
        }
    }

    /// Checks `presented` for `scope`. `admin` implies every scope.
    pub fn check(&self, presented: Option<&str>, scope: Scope) -> Result<TokenId, AuthError> {
        let presented = presented.ok_or(AuthError::Unauthenticated)?.as_bytes();
        let mut found: Option<usize> = None;
        for (i, t) in self.tokens.iter().enumerate() {
            // ct_eq on slices of different lengths is false without looking at bytes:
            // only a token's length can leak, and tokens are >= 16 random characters.
            if bool::from(t.token.as_bytes().ct_eq(presented)) {
                found = Some(i);
            }
        }
        let index = found.ok_or(AuthError::Unauthenticated)?;
        if self.tokens[index]
            .scopes
            .iter()
            .any(|s| *s == scope || *s == Scope::Admin)
        {
            Ok(TokenId(index))
        } else {
            Err(AuthError::Forbidden)
        }
    }

    /// Takes one request from the token's rate budget; when it is spent, how long until
    /// the next request would be allowed.
    pub fn charge(&self, token: TokenId) -> Result<(), Duration> {
        let Some(limiter) = self.limiters.get(token.0).and_then(Option::as_ref) else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::MonotonicClock,
            ))
        })
    }

    /// Takes one request from the token's rate budget; false when it is spent.
    #[cfg(test)]
    fn allow(&self, token: TokenId) -> bool {
        self.charge(token).is_ok()
    }

    /// Extracts the token of an `Authorization: Bearer <token>` header value.
    pub fn bearer(header: Option<&str>) -> Option<&str> {
        let value = header?.trim();
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
}

/// A peer's budget of failed authentications (GCRA), on `std::time::Instant`.
type PeerLimiter = governor::RateLimiter<
    IpAddr,
    governor::state::keyed::DashMapStateStore<IpAddr>,
    governor::clock::MonotonicClock,
    governor::middleware::StateInformationMiddleware,
>;

/// Tracked peers beyond which the ones whose budget is whole again are forgotten.
const PEERS_TRACKED_SWEEP: usize = 4_096;

/// Failed authentications per peer address: `max` in a burst, refilled at `max` per
/// window. The failure that spends the last of a budget refuses the address until one
/// comes back.
pub struct PeerFailures {
    limiter: PeerLimiter,
    /// Refused addresses and until when. A `parking_lot::Mutex`, not a tokio one:
    /// nothing awaits while holding it, and it is touched only by failures and by
    /// attempts from addresses in it (a lookup).
    refused: parking_lot::Mutex<HashMap<IpAddr, Instant>>,
    /// How many addresses `refused` holds: lets every request skip its lock while
    /// nobody is refused.
    refused_count: AtomicUsize,
    /// One budget unit comes back after this long.
    refill: Duration,
    /// When the limiter's and the refused map's entries were last swept.
    swept: parking_lot::Mutex<Instant>,
}

impl PeerFailures {
    fn new(max: u32, window: Duration) -> Option<PeerFailures> {
        let burst = std::num::NonZeroU32::new(max)?;
        let refill = (window / max).max(Duration::from_nanos(1));
        let quota = governor::Quota::with_period(refill)?.allow_burst(burst);
        Some(PeerFailures {
            limiter: governor::RateLimiter::dashmap_with_clock(
                quota,
                governor::clock::MonotonicClock,
            )
            .with_middleware::<governor::middleware::StateInformationMiddleware>(),
            refused: parking_lot::Mutex::new(HashMap::new()),
            refused_count: AtomicUsize::new(0),
            refill,
            swept: parking_lot::Mutex::new(Instant::now()),
        })
    }

    /// `Err(PeerLimited)` while `peer`'s address is refused.
    fn admit(&self, peer: IpAddr) -> Result<(), AuthError> {
        if self.refused_count.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let key = peer_key(peer);
        let mut refused = self.refused.lock();
        let Some(until) = refused.get(&key).copied() else {
            return Ok(());
        };
        let now = Instant::now();
        if until > now {
            return Err(AuthError::PeerLimited {
                retry_after: until - now,
            });
        }
        refused.remove(&key);
        self.refused_count.store(refused.len(), Ordering::Release);
        Ok(())
    }

    /// Counts a failure of `peer`'s address; when it spent the budget, the address is
    /// refused until a unit comes back.
    fn failed(&self, peer: IpAddr) {
        let key = peer_key(peer);
        let now = Instant::now();
        let until = match self.limiter.check_key(&key) {
            Ok(state) if state.remaining_burst_capacity() > 0 => None,
            // That was the last unit: the next comes back within one refill period.
            Ok(_) => Some(now + self.refill),
            Err(not_until) => Some(not_until.earliest_possible().max(now + self.refill)),
        };
        if let Some(until) = until {
            metrics::counter!(crate::telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "auth_failures")
                .increment(1);
            tracing::info!(peer = %key, "authentication failures from this address are over the limit: refusing it for now");
            let mut refused = self.refused.lock();
            refused.insert(key, until);
            self.refused_count.store(refused.len(), Ordering::Release);
        }
        self.sweep(now);
    }

    /// Forgets peers whose budget is whole again and refusals that ended, at most once
    /// per refill period and only when many are tracked: memory follows the addresses
    /// that failed recently.
    fn sweep(&self, now: Instant) {
        if self.limiter.len() < PEERS_TRACKED_SWEEP {
            return;
        }
        {
            let mut swept = self.swept.lock();
            if now.duration_since(*swept) < self.refill {
                return;
            }
            *swept = now;
        }
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let mut refused = self.refused.lock();
        refused.retain(|_, until| *until > now);
        self.refused_count.store(refused.len(), Ordering::Release);
    }
}

/// The address a failure counts against: an IPv4 address (an IPv4-mapped IPv6 one
/// too), or the /64 of an IPv6 address (one host usually holds a whole /64).
pub fn peer_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(
                v6.to_bits() & !u128::from(u64::MAX),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_admin() {
        let auth = Auth::new(
            vec![
                TokenConfig {
                    token: "read-token-000000".into(),
                    scopes: vec![Scope::Read],
                },
                TokenConfig {
                    token: "admin-token-00000".into(),
                    scopes: vec![Scope::Admin],
                },
            ],
            0,
        );
        assert!(auth.check(Some("read-token-000000"), Scope::Read).is_ok());
        assert_eq!(
            auth.check(Some("read-token-000000"), Scope::Ingest),
            Err(AuthError::Forbidden)
        );
        assert!(auth.check(Some("admin-token-00000"), Scope::Ingest).is_ok());
        assert_eq!(
            auth.check(Some("read-token-00000"), Scope::Read),
            Err(AuthError::Unauthenticated)
        );
        assert_eq!(
            auth.check(None, Scope::Read),
            Err(AuthError::Unauthenticated)
        );
        assert_eq!(Auth::bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(Auth::bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(Auth::bearer(Some("Basic abc")), None);
    }

    #[test]
    fn each_token_has_its_own_request_budget() {
        let tokens = vec![
            TokenConfig {
                token: "first-token-00000".into(),
                scopes: vec![Scope::Read],
            },
            TokenConfig {
                token: "second-token-0000".into(),
                scopes: vec![Scope::Read],
            },
        ];
        let auth = Auth::new(tokens.clone(), 5);
        let first = auth.check(Some("first-token-00000"), Scope::Read).unwrap();
        let second = auth.check(Some("second-token-0000"), Scope::Read).unwrap();
        assert_eq!(
            (0..5).filter(|_| auth.allow(first)).count(),
            5,
            "a second's burst"
        );
        assert!(!auth.allow(first), "then refused");
        assert!(auth.allow(second), "another token is not affected");
        std::thread::sleep(std::time::Duration::from_millis(450));
        assert!(auth.allow(first), "the budget refills: 5 per second");
        let unlimited = Auth::new(tokens, 0);
        let t = unlimited
            .check(Some("first-token-00000"), Scope::Read)
            .unwrap();
        assert!((0..10_000).all(|_| unlimited.allow(t)));
    }

    #[test]
    fn a_peer_that_failed_too_often_is_refused_whatever_its_token() {
        let tokens = vec![TokenConfig {
            token: "good-token-000000".into(),
            scopes: vec![Scope::Ingest],
        }];
        let auth = Auth::new(tokens, 0).with_peer_failures(3, Duration::from_millis(600));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let check = |peer, token| auth.check_from(Some(peer), Some(token), Scope::Ingest);
        // Successes are not counted.
        for _ in 0..100 {
            assert!(check(a, "good-token-000000").is_ok());
        }
        for _ in 0..3 {
            assert_eq!(
                check(a, "bad-token-0000000"),
                Err(AuthError::Unauthenticated)
            );
        }
        // The budget is spent: refused before the token is looked at, a good one too.
        for token in ["bad-token-0000000", "good-token-000000"] {
            match check(a, token) {
                Err(AuthError::PeerLimited { retry_after }) => {
                    assert!(retry_after <= Duration::from_millis(200), "{retry_after:?}");
                }
                other => panic!("want PeerLimited, got {other:?}"),
            }
        }
        assert!(auth.admit(a).is_err());
        // Another address is not affected; no peer (unknown) is never limited.
        assert!(check(b, "good-token-000000").is_ok());
        assert!(auth.admit(b).is_ok());
        assert!(
            (0..10).all(|_| auth.check_from(None, Some("x"), Scope::Ingest)
                == Err(AuthError::Unauthenticated))
        );
        // One unit comes back after window / max.
        std::thread::sleep(Duration::from_millis(250));
        assert!(check(a, "good-token-000000").is_ok());
        // An IPv6 /64 is one peer; an IPv4-mapped address is its IPv4 address.
        let v6 = |s: &str| peer_key(s.parse().unwrap());
        assert_eq!(v6("2001:db8::1"), v6("2001:db8::ffff:1234"));
        assert_ne!(v6("2001:db8::1"), v6("2001:db8:0:1::1"));
        assert_eq!(v6("::ffff:10.0.0.1"), a);
        // 0: no limit.
        let unlimited = Auth::new(Vec::new(), 0).with_peer_failures(0, Duration::from_secs(1));
        assert!(
            (0..100).all(|_| unlimited.check_from(Some(a), Some("x"), Scope::Read)
                == Err(AuthError::Unauthenticated))
        );
    }
}
