//! Hermod's backend, in layers that depend only downwards: `domain` (pure rules), `store` (SQL,
//! both dialects), `engine` (transitions and background work), `http` (the API); `tools` (the
//! benchmark, the receiver, client generation) and `cli` (the `hermod` command) on top.
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
