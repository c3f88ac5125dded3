//! Which web pages may open sessions (`--allowed-origins`).
//!
//! A browser attaches the page's origin to every WebSocket handshake and,
//! unlike with `fetch`, does not enforce CORS on the answer. Without a
//! check, any site a user visits could open a session with the user's
//! cookies or a token it got hold of (cross-site WebSocket hijacking). So a
//! node accepts a handshake carrying an `Origin` only from its own pages
//! (the origin names the host the request was sent to) or from origins the
//! operator listed. Handshakes without an `Origin` come from programs, not
//! pages; they are let through, since a program can claim any origin
//! anyway.

/// The `--allowed-origins` setting, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `*`: any page may connect.
    Any,
    /// Pages of this node, plus these origins (`scheme://host[:port]`,
    /// lower case, default port dropped).
    List(Vec<String>),
}

impl AllowedOrigins {
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let entries: Vec<&str> = list
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        if entries.contains(&"*") {
            return if entries.len() == 1 {
                Ok(Self::Any)
            } else {
                Err("* allows every origin; list nothing else beside it".into())
            };
        }
        entries
            .into_iter()
            .map(|entry| {
                normalize(entry).ok_or_else(|| {
                    format!(
                        "{entry:?} is not an origin: write scheme://host[:port] with scheme \
                         http or https and no path, e.g. https://chat.example.com"
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(Self::List)
    }

    /// Whether a handshake with this `Origin` header, sent to this `Host`,
    /// may go ahead.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        match self {
            Self::Any => true,
            Self::List(allowed) => {
                let Some(origin) = normalize(origin) else {
                    return false;
                };
                let same_origin = host.is_some_and(|host| {
                    let authority = &origin[origin.find("://").map_or(0, |i| i + 3)..];
                    authority == strip_default_port(&host.to_ascii_lowercase())
                });
                same_origin || allowed.contains(&origin)
            }
        }
    }
}

/// `HTTPS://Chat.Example.com:443` -> `https://chat.example.com`; `None`
/// for anything that is not an http(s) origin (including `null`).
fn normalize(origin: &str) -> Option<String> {
    let lower = origin.trim().to_ascii_lowercase();
    let (scheme, authority) = lower.split_once("://")?;
    if !matches!(scheme, "http" | "https")
        || authority.is_empty()
        || authority.contains(['/', '?', '#', '@', ' '])
    {
        return None;
    }
    let authority = match (scheme, authority.rsplit_once(':')) {
        ("http", Some((host, "80"))) | ("https", Some((host, "443"))) => host,
        _ => authority,
    };
    Some(format!("{scheme}://{authority}"))
}

/// The Host header does not say which scheme was used, so either default
/// port is dropped before comparing.
fn strip_default_port(host: &str) -> &str {
    host.strip_suffix(":80")
        .or_else(|| host.strip_suffix(":443"))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowedOrigins {
        AllowedOrigins::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn programs_and_own_pages_are_always_allowed() {
        let default = list(&[]);
        assert!(default.allows(None, Some("node:8080")));
        assert!(default.allows(Some("http://node:8080"), Some("node:8080")));
        assert!(default.allows(
            Some("https://Chat.Example.com"),
            Some("chat.example.com:443")
        ));
        assert!(!default.allows(Some("http://evil.example"), Some("node:8080")));
        assert!(!default.allows(Some("http://node:8081"), Some("node:8080")));
        assert!(!default.allows(Some("null"), Some("node:8080")));
        assert!(!default.allows(Some("http://node:8080"), None));
    }

    #[test]
    fn listed_origins_are_compared_normalized() {
        let allowed = list(&["https://chat.example.com:443", " http://localhost:3000 "]);
        assert!(allowed.allows(Some("HTTPS://chat.example.com"), Some("api.internal")));
        assert!(allowed.allows(Some("http://localhost:3000"), Some("node:8080")));
        assert!(!allowed.allows(Some("http://chat.example.com"), Some("node:8080")));
        assert!(list(&["*"]).allows(Some("http://anything"), None));
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in [
            "chat.example.com",
            "ftp://x",
            "https://x/path",
            "https://",
            "*,x",
        ] {
            let entries: Vec<String> = bad.split(',').map(str::to_owned).collect();
            assert!(AllowedOrigins::parse(&entries).is_err(), "{bad}");
        }
    }
}
