//! Who is connecting: HS256 JWTs when a secret is configured, a
//! self-chosen `?client_id=` when authentication is off (development only).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::protocol::{ClientId, InvalidId};

/// Clock skew tolerated on `exp`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Why a connection was refused. `Unauthorized` maps to HTTP 401,
/// `BadClientId` to 400.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    BadClientId(String),
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// Checks client tokens: HS256 only, `exp` required.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    pub fn hs256(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        // Audience checks are opt-in; without this, any token carrying an
        // `aud` claim would be refused for want of an expected audience.
        validation.validate_aud = false;
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// The client id a valid token speaks for.
    pub fn verify(&self, token: &str) -> Result<ClientId, AuthError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired".to_owned(),
                    ErrorKind::InvalidSignature => "token signature does not verify".to_owned(),
                    ErrorKind::InvalidAlgorithm => {
                        "token algorithm not accepted; this node takes HS256".to_owned()
                    }
                    ErrorKind::MissingRequiredClaim(claim) => format!("token lacks \"{claim}\""),
                    _ => format!("token is not a valid JWT: {e}"),
                };
                AuthError::Unauthorized(why)
            })?;
        ClientId::parse(&data.claims.sub)
            .map_err(|InvalidId(why)| AuthError::BadClientId(format!("token subject: {why}")))
    }
}

/// Signs an HS256 token for `client` valid for `ttl`: what an application
/// backend does for its users, and what `switchboard token` prints.
pub fn mint_hs256(secret: &str, client: &ClientId, ttl: Duration) -> String {
    let exp = SystemTime::now()
        .checked_add(ttl)
        .unwrap_or_else(SystemTime::now)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        sub: client.to_string(),
        exp,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_with_the_same_secret_only() {
        let alice = ClientId::parse("alice").unwrap();
        let token = mint_hs256("s3cret", &alice, Duration::from_secs(60));
        assert_eq!(JwtVerifier::hs256("s3cret").verify(&token).unwrap(), alice);
        let err = JwtVerifier::hs256("other").verify(&token).unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");
    }

    #[test]
    fn garbage_is_unauthorized() {
        let err = JwtVerifier::hs256("s").verify("not.a.jwt").unwrap_err();
        assert!(matches!(err, AuthError::Unauthorized(_)));
    }
}
