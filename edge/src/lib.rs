//! Hermod's edge Worker. It stands close to devices and server systems: checks client keys and
//! device signatures with the `shared` crate, turns away malformed, oversized and over-rate
//! requests with the backend's own problem+json, and forwards the rest to the backend with a
//! signed assertion of who the caller is.
//!
//! `policy` is pure and tested natively; `worker_entry` is the Worker itself (wasm32 only).
#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]

pub mod policy;

#[cfg(target_arch = "wasm32")]
mod mailbox;
#[cfg(target_arch = "wasm32")]
mod worker_entry;
