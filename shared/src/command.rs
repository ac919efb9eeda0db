//! Commands: their types, statuses, ids and lifetimes.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::ErrorCode;

/// What a command asks the device to do. Custom types carry their meaning in the payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CommandType {
    Provision,
    Authenticate,
    Sign,
    Certificate,
    Ping,
    Custom(String),
}

impl CommandType {
    pub const BUILT_IN: [CommandType; 5] = [
        CommandType::Provision,
        CommandType::Authenticate,
        CommandType::Sign,
        CommandType::Certificate,
        CommandType::Ping,
    ];

    /// Parses a type name. Custom names are `x-` followed by 1–64 of `[a-z0-9._-]`, so that a
    /// typo of a built-in type (`authenticat`) is refused instead of becoming a custom command.
    pub fn parse(name: &str) -> Result<Self, ErrorCode> {
        Ok(match name {
            "provision" => Self::Provision,
            "authenticate" => Self::Authenticate,
            "sign" => Self::Sign,
            "certificate" => Self::Certificate,
            "ping" => Self::Ping,
            custom => {
                let rest = custom.strip_prefix("x-").ok_or(ErrorCode::UnknownCommandType)?;
                let valid = !rest.is_empty()
                    && rest.len() <= 64
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
                if !valid {
                    return Err(ErrorCode::UnknownCommandType);
                }
                Self::Custom(custom.to_owned())
            }
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Provision => "provision",
            Self::Authenticate => "authenticate",
            Self::Sign => "sign",
            Self::Certificate => "certificate",
            Self::Ping => "ping",
            Self::Custom(name) => name,
        }
    }
}

impl fmt::Display for CommandType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CommandType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CommandType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(|_| serde::de::Error::custom("unknown command type"))
    }
}

/// Where a command is in its life.
///
/// `pending` (in the mailbox) → `delivered` (a device fetched it) → one of the final states:
/// `approved`, `declined` (a device answered), `cancelled` (its client withdrew it) or
/// `expired` (nobody answered before its timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Pending,
    Delivered,
    Approved,
    Declined,
    Cancelled,
    Expired,
}

impl CommandStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Delivered)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Approved => "approved",
            Self::Declined => "declined",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "approved" => Self::Approved,
            "declined" => Self::Declined,
            "cancelled" => Self::Cancelled,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id from 16 random bytes that the caller draws (this crate has no RNG).
            pub fn from_random(bytes: [u8; 16]) -> Self {
                Self(format!("{}{}", Self::PREFIX, hex::encode(bytes)))
            }

            pub fn parse(s: &str) -> Option<Self> {
                let hex = s.strip_prefix(Self::PREFIX)?;
                (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                    .then(|| Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::parse(&s).ok_or_else(|| format!("not a valid {} id", Self::PREFIX.trim_end_matches('_')))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A command's id: `cmd_` and 32 lowercase hex digits.
    CommandId,
    "cmd_"
);
prefixed_id!(
    /// A device's id: `dev_` and 32 lowercase hex digits.
    DeviceId,
    "dev_"
);

/// A user as the client system names them (an Identity Manager person id, a login name).
/// 1–128 printable characters without spaces at either end, and without the invisible
/// characters that make two ids look alike or reorder what is shown (bidi controls, zero-width
/// characters, the byte-order mark).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.trim() == s
            && !s.chars().any(|c| c.is_control() || is_invisible_format(c));
        ok.then(|| Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Bidi controls (U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069), zero-width characters
/// (U+200B–U+200D, U+2060) and the byte-order mark (U+FEFF).
pub(crate) fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

impl TryFrom<String> for UserId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| "user_id must be 1-128 printable characters".to_owned())
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> String {
        id.0
    }
}

/// A command's two clocks, in seconds: at `timeout` it leaves the mailbox (and its client hears
/// that it expired if nobody answered); at `lifespan` it leaves history. `timeout < lifespan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub timeout: u32,
    pub lifespan: u32,
}

impl Lifetimes {
    /// The longest lifespan a command may ask for: 30 days.
    pub const MAX_LIFESPAN: u32 = 30 * 24 * 3600;

    pub fn new(timeout: u32, lifespan: u32) -> Result<Self, ErrorCode> {
        if timeout == 0 || lifespan > Self::MAX_LIFESPAN || timeout >= lifespan {
            return Err(ErrorCode::InvalidLifetimes);
        }
        Ok(Self { timeout, lifespan })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_and_custom_types_parse() {
        for t in CommandType::BUILT_IN {
            assert_eq!(CommandType::parse(t.as_str()), Ok(t.clone()));
        }
        assert_eq!(
            CommandType::parse("x-door.open"),
            Ok(CommandType::Custom("x-door.open".into()))
        );
        for bad in [
            "",
            "authenticat",
            "x-",
            "x-UPPER",
            "x-a b",
            "Ping",
            &format!("x-{}", "a".repeat(65)),
        ] {
            assert_eq!(CommandType::parse(bad), Err(ErrorCode::UnknownCommandType), "{bad:?}");
        }
    }

    #[test]
    fn ids_round_trip_and_refuse_garbage() {
        let id = CommandId::from_random([0xab; 16]);
        assert_eq!(id.as_str(), format!("cmd_{}", "ab".repeat(16)));
        assert_eq!(CommandId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(CommandId::parse(&id.as_str().replace("cmd_", "dev_")), None);
        assert_eq!(CommandId::parse("cmd_ABABABABABABABABABABABABABABABAB"), None);
        assert_eq!(CommandId::parse("cmd_ab"), None);
        assert!(DeviceId::parse(DeviceId::from_random([1; 16]).as_str()).is_some());
    }

    #[test]
    fn timeout_must_be_shorter_than_lifespan() {
        assert!(Lifetimes::new(60, 61).is_ok());
        assert_eq!(Lifetimes::new(60, 60), Err(ErrorCode::InvalidLifetimes));
        assert_eq!(Lifetimes::new(61, 60), Err(ErrorCode::InvalidLifetimes));
        assert_eq!(Lifetimes::new(0, 60), Err(ErrorCode::InvalidLifetimes));
        assert_eq!(
            Lifetimes::new(1, Lifetimes::MAX_LIFESPAN + 1),
            Err(ErrorCode::InvalidLifetimes)
        );
    }

    #[test]
    fn user_ids() {
        assert!(UserId::parse("alice@example.com").is_some());
        assert!(UserId::parse("").is_none());
        assert!(UserId::parse(" alice").is_none());
        assert!(UserId::parse("a\nb").is_none());
        for invisible in [
            "admin\u{202E}nimda",
            "al\u{200B}ice",
            "\u{FEFF}bob",
            "x\u{2066}y",
            "a\u{061C}b",
        ] {
            assert!(UserId::parse(invisible).is_none(), "{invisible:?}");
        }
        assert!(UserId::parse("Jürgen Ødegård").is_some());
        assert!(UserId::parse(&"a".repeat(129)).is_none());
    }
}
