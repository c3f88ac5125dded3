//! `switchboard token <client id>`: prints an HS256 token signed with the
//! nodes' secret, for trying authentication and for scripts. In
//! production, the application's own backend mints tokens the same way
//! ([`mint_hs256`](switchboard::auth::mint_hs256)) after it has signed its user
//! in.

use std::time::Duration;

use clap::Args;

use switchboard::auth::mint_hs256_for;
use switchboard::protocol::ClientId;

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The client id the token names (its `sub`).
    pub client_id: String,

    /// How long the token is valid: seconds, or a number with s, m, h or d
    /// (90s, 15m, 1h, 7d).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,

    /// The nodes' HS256 secret (their --jwt-secret).
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// `aud` claim, for nodes started with --jwt-audience.
    #[arg(long, env = "SWITCHBOARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// `iss` claim, for nodes started with --jwt-issuer.
    #[arg(long, env = "SWITCHBOARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
}

/// The token, or what to fix.
pub fn mint(args: &TokenArgs) -> Result<String, String> {
    let secret =
        args.jwt_secret.as_deref().filter(|s| !s.is_empty()).ok_or(
            "no secret: pass --jwt-secret or set SWITCHBOARD_JWT_SECRET (the nodes' secret)",
        )?;
    let client = ClientId::parse(&args.client_id)
        .map_err(|e| format!("{:?} is not a client id: {e}", args.client_id))?;
    Ok(mint_hs256_for(
        secret,
        &client,
        args.ttl,
        args.jwt_audience.as_deref(),
        args.jwt_issuer.as_deref(),
    ))
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&text[..at], c),
        _ => (text, 's'),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: give seconds, or a number with s, m, h or d (1h)"))?;
    let seconds = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86_400),
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use s, m, h or d"
            ));
        }
    }
    .filter(|s| (1..=366 * 86_400).contains(s))
    .ok_or_else(|| format!("{text:?}: a token must live between 1 s and 366 days"))?;
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_like_people_write_them() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86_400));
        for bad in ["", "h", "1w", "-5m", "0", "1000d", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
