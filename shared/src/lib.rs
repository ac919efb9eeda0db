//! Hermod's command protocol, shared by the backend and the edge Worker.
//!
//! Pure on purpose: no I/O, no async, no web framework, and the clock is always passed in, so
//! the same functions run natively and in `wasm32-unknown-unknown`, and tests pin every case.
#![forbid(unsafe_code)]

pub mod admin;
pub mod approval;
pub mod command;
pub mod credential;
pub mod edge;
pub mod enrolment;
pub mod error;
pub mod keys;
pub mod ratelimit;
pub mod signing;
pub mod webhook;
pub mod wire;

pub use command::{CommandId, CommandStatus, CommandType, DeviceId, Lifetimes, UserId};
pub use error::{ErrorCode, Problem};

/// A unix time in whole seconds as the protocol writes it: 1 to 12 ASCII digits, no sign, no
/// leading zero (so one instant has one spelling, and no value can overflow arithmetic on it).
pub fn parse_unix_seconds(s: &str) -> Option<i64> {
    let canonical =
        !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// Lowercase hex of SHA-256, the digest used wherever the protocol hashes a body or a key.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::parse_unix_seconds;

    #[test]
    fn timestamps_have_one_spelling() {
        assert_eq!(parse_unix_seconds("1764680000"), Some(1_764_680_000));
        assert_eq!(parse_unix_seconds("0"), Some(0));
        for bad in [
            "",
            "+1764680000",
            "-5",
            "01764680000",
            "000",
            " 1",
            "1e9",
            "9223372036854775807",
            "1_000",
        ] {
            assert_eq!(parse_unix_seconds(bad), None, "{bad:?}");
        }
    }
}
