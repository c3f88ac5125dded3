//! Who is connecting: a JWT (HS256 with a shared secret, or RS256/EdDSA
//! with the issuer's public key) when authentication is on, a self-chosen
//! `?client_id=` when it is off (development only).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;

use crate::config::{JwtConfig, JwtKey};
use crate::protocol::{ClientId, InvalidId};
use crate::redact::Secret;

/// Clock skew tolerated on `exp`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Why a connection was refused. `Unauthorized` maps to HTTP 401, the
/// others to 400.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    BadClientId(String),
    /// v2: the `device` query parameter is not a device id.
    #[error("{0}")]
    BadDeviceId(String),
}

/// Checks client tokens: one algorithm, the one the configured key is for
/// (a token naming any other, `none` included, is refused before its
/// signature is looked at), `exp` required, `aud` and `iss` when configured.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    /// Reads the key (a public key file, if so configured). Fails with a
    /// sentence for the operator.
    pub fn new(config: &JwtConfig) -> Result<Self, KeyError> {
        let (key, algorithm) = match &config.key {
            JwtKey::Secret(secret) => (
                DecodingKey::from_secret(secret.expose().as_bytes()),
                Algorithm::HS256,
            ),
            JwtKey::PublicKeyFile(path) => public_key(path)?,
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        let mut required = vec!["exp"];
        match &config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Otherwise jsonwebtoken would refuse any token that carries an
            // `aud`, for want of one to compare it with.
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Self { key, validation })
    }

    /// An HS256 verifier with no audience or issuer check.
    pub fn hs256(secret: &str) -> Self {
        Self::new(&JwtConfig {
            key: JwtKey::Secret(Secret::new(secret)),
            audience: None,
            issuer: None,
        })
        .expect("a secret needs no file")
    }

    /// The algorithm tokens must be signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }

    /// The client id a valid token speaks for.
    pub fn verify(&self, token: &str) -> Result<ClientId, AuthError> {
        self.verify_claims(token).map(|(client, _)| client)
    }

    /// [`verify`](Self::verify), and every claim of the token (for the
    /// connect hook, v3).
    pub fn verify_claims(&self, token: &str) -> Result<(ClientId, serde_json::Value), AuthError> {
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
            .map_err(|e| {
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired".to_owned(),
                    ErrorKind::InvalidSignature => "token signature does not verify".to_owned(),
                    ErrorKind::InvalidAlgorithm => format!(
                        "token algorithm not accepted; this node takes {:?}",
                        self.algorithm()
                    ),
                    ErrorKind::InvalidAudience => "token audience (aud) not accepted".to_owned(),
                    ErrorKind::InvalidIssuer => "token issuer (iss) not accepted".to_owned(),
                    ErrorKind::ImmatureSignature => "token not valid yet (nbf)".to_owned(),
                    ErrorKind::MissingRequiredClaim(claim) => format!("token lacks \"{claim}\""),
                    _ => format!("token is not a valid JWT: {e}"),
                };
                AuthError::Unauthorized(why)
            })?;
        let sub = data
            .claims
            .get("sub")
            .and_then(|s| s.as_str())
            .ok_or_else(|| {
                AuthError::Unauthorized("token lacks \"sub\" (a string: the client id)".into())
            })?;
        let client = ClientId::parse(sub)
            .map_err(|InvalidId(why)| AuthError::BadClientId(format!("token subject: {why}")))?;
        Ok((client, data.claims))
    }
}

/// Why `--jwt-public-key` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read --jwt-public-key {}", .path.display())]
    Unreadable {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--jwt-public-key {path} holds a private key; give the nodes only the public half \
         (openssl pkey -in {path} -pubout)",
        path = .0.display()
    )]
    PrivateKey(std::path::PathBuf),
    #[error(
        "--jwt-public-key {} holds no RSA or Ed25519 public key in PEM form \
         (-----BEGIN PUBLIC KEY-----); export the token issuer's public key, not its private key",
        .0.display()
    )]
    NotAKey(std::path::PathBuf),
}

/// A PEM public key and the one algorithm it is used with: RS256 for RSA,
/// EdDSA for Ed25519.
fn public_key(path: &Path) -> Result<(DecodingKey, Algorithm), KeyError> {
    let pem = std::fs::read(path).map_err(|source| KeyError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    // jsonwebtoken would take a private key too; a signing key has no
    // business on the nodes, so its presence is an operator error.
    if String::from_utf8_lossy(&pem).contains("PRIVATE KEY") {
        return Err(KeyError::PrivateKey(path.to_owned()));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok((key, Algorithm::EdDSA));
    }
    Err(KeyError::NotAKey(path.to_owned()))
}

/// Signs an HS256 token for `client` valid for `ttl`: what an application
/// backend does for its users, and what `switchboard token` prints.
pub fn mint_hs256(secret: &str, client: &ClientId, ttl: Duration) -> String {
    mint_hs256_for(secret, client, ttl, None, None)
}

/// [`mint_hs256`] with `aud` and `iss` claims, for nodes that check them.
pub fn mint_hs256_for(
    secret: &str,
    client: &ClientId,
    ttl: Duration,
    audience: Option<&str>,
    issuer: Option<&str>,
) -> String {
    #[derive(Serialize)]
    struct Minted<'a> {
        sub: String,
        exp: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        aud: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        iss: Option<&'a str>,
    }
    let exp = SystemTime::now()
        .checked_add(ttl)
        .unwrap_or_else(SystemTime::now)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Minted {
        sub: client.to_string(),
        exp,
        aud: audience,
        iss: issuer,
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

    fn sign(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s"),
        )
        .unwrap()
    }

    fn in_an_hour() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600
    }

    fn refusal(verifier: &JwtVerifier, token: &str) -> String {
        match verifier.verify(token) {
            Err(AuthError::Unauthorized(why)) => why,
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let verifier = JwtVerifier::new(&JwtConfig {
            key: JwtKey::Secret(Secret::new("s")),
            audience: Some("chat".into()),
            issuer: Some("https://id.example".into()),
        })
        .unwrap();
        let exp = in_an_hour();
        let good = serde_json::json!({"sub": "bob", "exp": exp, "aud": "chat", "iss": "https://id.example"});
        assert_eq!(verifier.verify(&sign(good)).unwrap().as_str(), "bob");
        let why = refusal(
            &verifier,
            &sign(serde_json::json!({"sub": "bob", "exp": exp, "iss": "https://id.example"})),
        );
        assert!(why.contains("aud"), "{why}");
        let why = refusal(
            &verifier,
            &sign(
                serde_json::json!({"sub": "bob", "exp": exp, "aud": "other", "iss": "https://id.example"}),
            ),
        );
        assert!(why.contains("audience"), "{why}");
        let why = refusal(
            &verifier,
            &sign(
                serde_json::json!({"sub": "bob", "exp": exp, "aud": "chat", "iss": "https://evil.example"}),
            ),
        );
        assert!(why.contains("issuer"), "{why}");
        // Without the settings, the claims are not looked at.
        let plain = JwtVerifier::hs256("s");
        let any = serde_json::json!({"sub": "bob", "exp": exp, "aud": "other", "iss": "x"});
        assert!(plain.verify(&sign(any)).is_ok());
    }

    #[test]
    fn exp_is_required_and_alg_none_is_refused() {
        let verifier = JwtVerifier::hs256("s");
        let why = refusal(&verifier, &sign(serde_json::json!({"sub": "bob"})));
        assert!(why.contains("exp"), "{why}");
        // {"alg":"none","typ":"JWT"} . {"sub":"bob","exp":4102444800} . (no signature)
        let unsigned =
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJib2IiLCJleHAiOjQxMDI0NDQ4MDB9.";
        refusal(&verifier, unsigned);
    }

    #[test]
    fn a_public_key_file_must_hold_a_public_key() {
        let dir = std::env::temp_dir().join(format!("sb-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = |path: &Path| JwtConfig {
            key: JwtKey::PublicKeyFile(path.to_owned()),
            audience: None,
            issuer: None,
        };
        let missing = JwtVerifier::new(&config(&dir.join("missing.pem")))
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("cannot read"), "{missing}");
        let junk = dir.join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let wrong = JwtVerifier::new(&config(&junk)).err().unwrap().to_string();
        assert!(wrong.contains("private key"), "{wrong}");
        let junk = dir.join("junk-public.pem");
        std::fs::write(
            &junk,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let wrong = JwtVerifier::new(&config(&junk)).err().unwrap().to_string();
        assert!(wrong.contains("no RSA or Ed25519 public key"), "{wrong}");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let public = dir.join("ed25519.pem");
        std::fs::write(&public, key.public_key_pem()).unwrap();
        let verifier = JwtVerifier::new(&config(&public)).unwrap();
        assert_eq!(verifier.algorithm(), Algorithm::EdDSA);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_is_unauthorized() {
        let err = JwtVerifier::hs256("s").verify("not.a.jwt").unwrap_err();
        assert!(matches!(err, AuthError::Unauthorized(_)));
    }
}
