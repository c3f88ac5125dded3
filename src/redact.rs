//! Keeping credentials out of logs and error messages.
//!
//! Operators paste logs into tickets and chat rooms; a JWT, an API key or a
//! password in a backend URL must never ride along. Anything secret is held
//! in a [`Secret`], whose `Debug` and `Display` print a placeholder, and
//! anything that may embed one (a URL, a query string) goes through the
//! functions here before it is shown.

use std::fmt;

/// What a redacted value is shown as.
pub const REDACTED: &str = "[redacted]";

/// A credential. Only [`expose`](Secret::expose) gives the value, so that
/// printing a config or an error that holds one cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A URL with the password (or a lone user-info token) of its authority
/// replaced: `redis://:hunter2@host` shows as `redis://:[redacted]@host`.
pub fn url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let user_info = &rest[..at];
    let shown = match user_info.split_once(':') {
        Some((user, _password)) => format!("{user}:{REDACTED}"),
        // `nats://token@host`: the whole user info is the credential.
        None => REDACTED.to_owned(),
    };
    format!("{}{shown}{}", &url[..scheme_end], &rest[at..])
}

/// A query string with the values of credential parameters (`token`,
/// `access_token`, `api_key`) replaced, fit for a log line.
pub fn query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_credential(name) => format!("{name}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_credential(name: &str) -> bool {
    ["token", "access_token", "api_key", "key", "password"]
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn urls_lose_their_passwords_and_tokens() {
        assert_eq!(
            url("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:[redacted]@127.0.0.1:6379/0"
        );
        assert_eq!(
            url("rediss://app:p@ss@redis.example:6380"),
            "rediss://app:[redacted]@redis.example:6380"
        );
        assert_eq!(
            url("nats://s3cr3t@nats:4222"),
            "nats://[redacted]@nats:4222"
        );
        assert_eq!(url("nats://nats:4222/a@b"), "nats://nats:4222/a@b");
        assert_eq!(url("redis://127.0.0.1"), "redis://127.0.0.1");
        assert_eq!(url("not a url"), "not a url");
    }

    #[test]
    fn credential_parameters_are_hidden() {
        assert_eq!(
            query("client_id=bob&token=eyJ.x.y&TOKEN=z"),
            "client_id=bob&token=[redacted]&TOKEN=[redacted]"
        );
        assert_eq!(query(""), "");
        assert_eq!(query("token"), "token");
    }
}
