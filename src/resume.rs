//! Resume tokens (acks mode, v2): what a client presents to take its
//! detached session back, on any node.
//!
//! A token is an HS256 JWT signed with the cluster's `--resume-secret`,
//! naming the client (`sub`), the device (`dev`) and the session (`sid`).
//! It proves nothing beyond "this node's cluster issued it for that
//! session": the reconnecting client still authenticates as usual, and a
//! token is honoured only for the same client and device. It is opaque to
//! clients and never accepted as a credential anywhere else (its `aud` is
//! `switchboard-resume`, which no client token carries).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::{ClientId, DeviceId};

/// The audience every resume token names, so that it cannot pass for a
/// client token (nor a client token for it).
const AUDIENCE: &str = "switchboard-resume";
/// How long a token is accepted at most; the session's window is what
/// really bounds a resume.
const LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    dev: String,
    sid: Uuid,
    aud: String,
    exp: u64,
}

/// What a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeClaim {
    pub client: ClientId,
    pub device: DeviceId,
    pub session: Uuid,
}

/// Why a token was not honoured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResumeError {
    #[error("the resume token is not one this cluster issued")]
    Invalid,
    #[error("the resume token is for another client or device")]
    NotYours,
}

/// The keys tokens are signed and checked with.
pub struct ResumeKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl ResumeKeys {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// A token for `session` of `client` on `device`.
    pub fn mint(&self, client: &ClientId, device: &DeviceId, session: Uuid) -> String {
        let exp = (SystemTime::now() + LIFETIME)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            sub: client.to_string(),
            dev: device.to_string(),
            sid: session,
            aud: AUDIENCE.to_owned(),
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// The session `token` names, if it was issued by this cluster for
    /// `client` on `device`.
    pub fn verify(
        &self,
        token: &str,
        client: &ClientId,
        device: &DeviceId,
    ) -> Result<Uuid, ResumeError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| ResumeError::Invalid)?
            .claims;
        if claims.sub != client.as_str() || claims.dev != device.as_str() {
            return Err(ResumeError::NotYours);
        }
        Ok(claims.sid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(client: &str, device: &str) -> (ClientId, DeviceId) {
        (
            ClientId::parse(client).unwrap(),
            DeviceId::parse(device).unwrap(),
        )
    }

    #[test]
    fn a_token_resumes_its_own_session_only() {
        let keys = ResumeKeys::new("s3cret");
        let (alice, phone) = ids("alice", "phone");
        let session = Uuid::new_v4();
        let token = keys.mint(&alice, &phone, session);
        assert_eq!(keys.verify(&token, &alice, &phone), Ok(session));
        let (bob, tab) = ids("bob", "tab");
        assert_eq!(
            keys.verify(&token, &bob, &phone),
            Err(ResumeError::NotYours)
        );
        assert_eq!(
            keys.verify(&token, &alice, &tab),
            Err(ResumeError::NotYours)
        );
        // Another cluster's secret, or a forged one.
        let other = ResumeKeys::new("other");
        assert_eq!(
            other.verify(&token, &alice, &phone),
            Err(ResumeError::Invalid)
        );
        assert_eq!(
            keys.verify("not-a-token", &alice, &phone),
            Err(ResumeError::Invalid)
        );
        // A client token (no resume audience) is not a resume token.
        #[derive(Serialize)]
        struct ClientClaims {
            sub: &'static str,
            exp: u64,
        }
        let claims = ClientClaims {
            sub: "alice",
            exp: u64::MAX / 2,
        };
        let key = EncodingKey::from_secret(b"s3cret");
        let client_token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        assert_eq!(
            keys.verify(&client_token, &alice, &phone),
            Err(ResumeError::Invalid)
        );
    }
}
