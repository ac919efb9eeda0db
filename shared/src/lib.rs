//! Hermod's command protocol, shared by the backend and the edge Worker.
//!
//! Pure on purpose: no I/O, no async, no web framework, and the clock is always passed in, so
//! the same functions run natively and in `wasm32-unknown-unknown`, and tests pin every case.
#![forbid(unsafe_code)]

pub mod admin;
pub mod command;
pub mod credential;
pub mod edge;
pub mod enrolment;
pub mod error;
pub mod ratelimit;
pub mod signing;
pub mod webhook;
pub mod wire;

pub use command::{CommandId, CommandStatus, CommandType, DeviceId, Lifetimes, UserId};
pub use error::{ErrorCode, Problem};

/// Lowercase hex of SHA-256, the digest used wherever the protocol hashes a body or a key.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}
