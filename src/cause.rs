//! Errors carry their causes (`#[source]`) instead of flattening them into
//! strings; [`chain`] renders one for a person (a log line, an error frame,
//! a startup message) with every cause after it, as `anyhow`'s `{:#}` does.

use std::error::Error;

/// The cause of an error, kept whole.
pub type Cause = Box<dyn Error + Send + Sync>;

/// `error: cause: cause of the cause`, for people.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let shown = cause.to_string();
        // Some libraries repeat their cause in their own text.
        if !text.ends_with(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_shows_every_cause_once() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
    }
}
