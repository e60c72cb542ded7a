//! Bearer tokens and scopes. Tokens are compared in constant time (`subtle`), every
//! configured token is compared (no early exit), and no token is ever logged.

use subtle::ConstantTimeEq;

use crate::config::{Scope, TokenConfig};

/// Why a request is not authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No token, or an unknown one: 401.
    Unauthenticated,
    /// A known token without the needed scope: 403.
    Forbidden,
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
        Auth { tokens, limiters }
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

    /// Takes one request from the token's rate budget; false when it is spent.
    pub fn allow(&self, token: TokenId) -> bool {
        self.limiters
            .get(token.0)
            .and_then(Option::as_ref)
            .is_none_or(|l| l.check().is_ok())
    }

    /// Extracts the token of an `Authorization: Bearer <token>` header value.
    pub fn bearer(header: Option<&str>) -> Option<&str> {
        let value = header?.trim();
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
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
}
