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

pub struct Auth {
    tokens: Vec<TokenConfig>,
}

impl Auth {
    pub fn new(tokens: Vec<TokenConfig>) -> Self {
        Auth { tokens }
    }

    /// Checks `presented` for `scope`. `admin` implies every scope.
    pub fn check(&self, presented: Option<&str>, scope: Scope) -> Result<(), AuthError> {
        let presented = presented.ok_or(AuthError::Unauthenticated)?.as_bytes();
        let mut found: Option<&TokenConfig> = None;
        for t in &self.tokens {
            // ct_eq on slices of different lengths is false without looking at bytes:
            // only a token's length can leak, and tokens are >= 16 random characters.
            if bool::from(t.token.as_bytes().ct_eq(presented)) {
                found = Some(t);
            }
        }
        let token = found.ok_or(AuthError::Unauthenticated)?;
        if token
            .scopes
            .iter()
            .any(|s| *s == scope || *s == Scope::Admin)
        {
            Ok(())
        } else {
            Err(AuthError::Forbidden)
        }
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
        let auth = Auth::new(vec![
            TokenConfig {
                token: "read-token-000000".into(),
                scopes: vec![Scope::Read],
            },
            TokenConfig {
                token: "admin-token-00000".into(),
                scopes: vec![Scope::Admin],
            },
        ]);
        assert_eq!(auth.check(Some("read-token-000000"), Scope::Read), Ok(()));
        assert_eq!(
            auth.check(Some("read-token-000000"), Scope::Ingest),
            Err(AuthError::Forbidden)
        );
        assert_eq!(auth.check(Some("admin-token-00000"), Scope::Ingest), Ok(()));
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
}
