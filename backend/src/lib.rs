//! Hermod's backend: mailboxes, the command state machine, expiry, the callback outbox, and the
//! `hermod` CLI (serve, migrate, gen-client, the device simulator).
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod domain;
pub mod engine;
pub mod http;
pub mod store;
pub mod tools;

pub use config::Settings;
pub use http::server::Application;
