//! The HTTP front door of the backend: routes, request extraction, the OpenAPI document.

pub mod admin_api;
pub mod admin_auth;
pub mod callbacks_api;
pub mod client_api;
pub mod demo;
pub mod device_api;
pub mod docs;
pub mod edge_channel;
pub mod error;
pub mod extract;
pub mod listener;
pub mod openapi;
pub mod pages;
pub mod server;
pub mod tls;
