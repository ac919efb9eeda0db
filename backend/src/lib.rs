//! Hermod's backend: mailboxes, the command state machine, expiry, the callback outbox, and the
//! `hermod` CLI (serve, migrate, gen-client, the device simulator).
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod bench;
pub mod callbacks;
pub mod cli;
pub mod clients;
pub mod commands;
pub mod config;
pub mod db;
pub mod devices;
pub mod domain;
pub mod edge_channel;
pub mod error;
pub mod gen_client;
pub mod http;
pub mod mailbox;
pub mod metrics;
pub mod receiver;
pub mod replicas;
pub mod tenants;
pub mod tls;
pub mod wake;

pub use app::Application;
pub use config::Settings;
