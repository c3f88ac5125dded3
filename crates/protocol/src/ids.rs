//! Identifiers, validated once at the edge.
//!
//! Client ids end up inside Redis keys and node ids inside NATS subjects, so
//! nothing outside the protocol's character rules may ever become one. The
//! newtypes below can only be built through [`ClientId::parse`] and
//! [`NodeId::parse`]; holding one is proof that it was checked.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest client id the protocol allows, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;
/// Longest node id the protocol allows, in bytes.
pub const MAX_NODE_ID_BYTES: usize = 64;
/// Longest device id the protocol allows, in bytes.
pub const MAX_DEVICE_ID_BYTES: usize = 64;

/// Why a string is not a valid identifier. The text is meant for humans:
/// it ends up in HTTP 400 bodies, error frames and startup messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId(pub String);

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidId {}

fn check(
    what: &str,
    value: &str,
    max: usize,
    allowed: impl Fn(u8) -> bool,
    allowed_text: &str,
) -> Result<(), InvalidId> {
    if value.is_empty() {
        return Err(InvalidId(format!("{what} must not be empty")));
    }
    if value.len() > max {
        return Err(InvalidId(format!(
            "{what} is {} bytes long; the limit is {max}",
            value.len()
        )));
    }
    if let Some(bad) = value.bytes().find(|b| !allowed(*b)) {
        let shown = if bad.is_ascii_graphic() {
            format!("'{}'", bad as char)
        } else {
            format!("byte 0x{bad:02x}")
        };
        return Err(InvalidId(format!(
            "{what} contains {shown}; allowed are {allowed_text}"
        )));
    }
    Ok(())
}

fn client_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@' | b':')
}

fn node_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
}

fn device_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// A client id: 1 to 128 bytes of `A-Z a-z 0-9 _ - . @ :`.
///
/// Cheap to clone (`Arc<str>`): a client id is copied into every message,
/// map key and receipt that concerns it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        check_client_rule("client id", value)?;
        Ok(Self(Arc::from(value)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A node id: 1 to 64 bytes of `A-Z a-z 0-9 _ -`. It becomes the last token
/// of the node's NATS subject, which is why dots and wildcards are excluded.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        check(
            "node id",
            value,
            MAX_NODE_ID_BYTES,
            node_byte,
            "A-Z a-z 0-9 _ -",
        )?;
        Ok(Self(Arc::from(value)))
    }

    /// Turns any text (a host name, say) into a valid node id prefix by
    /// replacing what the protocol forbids and trimming to `max` bytes.
    pub fn sanitize(raw: &str, max: usize) -> String {
        let mut out: String = raw
            .bytes()
            .map(|b| if node_byte(b) { b as char } else { '-' })
            .collect();
        out.truncate(max);
        out
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A device id (v2): 1 to 64 bytes of `A-Z a-z 0-9 _ - .`, the client's own
/// label for one of its sessions; `default` when the client names none.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(Arc<str>);

impl DeviceId {
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        check(
            "device id",
            value,
            MAX_DEVICE_ID_BYTES,
            device_byte,
            "A-Z a-z 0-9 _ - .",
        )?;
        Ok(Self(Arc::from(value)))
    }

    /// The device of a client that names none.
    pub fn default_device() -> Self {
        Self(Arc::from("default"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A group id (v2): the same rule as a client id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(Arc<str>);

impl GroupId {
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        check_client_rule("group id", value)?;
        Ok(Self(Arc::from(value)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The client id rule, which group ids share.
fn check_client_rule(what: &'static str, value: &str) -> Result<(), InvalidId> {
    check(
        what,
        value,
        MAX_CLIENT_ID_BYTES,
        client_byte,
        "A-Z a-z 0-9 _ - . @ :",
    )
}

macro_rules! id_traits {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = std::borrow::Cow::<'de, str>::deserialize(d)?;
                $ty::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_traits!(ClientId);
id_traits!(NodeId);
id_traits!(DeviceId);
id_traits!(GroupId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_follow_the_protocol() {
        for ok in ["a", "alice", "a.b-c_d@e:f", "Z9", &"x".repeat(128)] {
            assert!(ClientId::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in ["", "a b", "a/b", "a*", "é", "a\nb", &"x".repeat(129)] {
            assert!(ClientId::parse(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn node_ids_exclude_subject_syntax() {
        assert!(NodeId::parse("node-a_1").is_ok());
        assert!(NodeId::parse(&"n".repeat(64)).is_ok());
        for bad in ["", "a.b", "a*", "a>", "a b", "a:b", &"n".repeat(65)] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn error_text_names_the_problem() {
        let err = ClientId::parse("a b").unwrap_err().to_string();
        assert!(err.contains("' '") || err.contains("0x20"), "{err}");
        let err = NodeId::parse("a.b").unwrap_err().to_string();
        assert!(err.contains("'.'"), "{err}");
    }

    #[test]
    fn device_and_group_ids_follow_the_protocol() {
        for ok in ["phone", "tab-1.a_b", &"d".repeat(64)] {
            assert!(DeviceId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a@b", "a:b", &"d".repeat(65)] {
            assert!(DeviceId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(DeviceId::default_device().as_str(), "default");
        assert!(GroupId::parse("team@x:y").is_ok());
        assert!(GroupId::parse("a/b").is_err());
    }

    #[test]
    fn sanitize_yields_a_valid_node_id() {
        let s = NodeId::sanitize("web-01.example.com", 20);
        assert_eq!(s, "web-01-example-com");
        assert!(NodeId::parse(&s).is_ok());
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<ClientId>("\"bob\"").is_ok());
        assert!(serde_json::from_str::<ClientId>("\"b b\"").is_err());
        assert!(serde_json::from_str::<NodeId>("\"n.1\"").is_err());
    }
}
