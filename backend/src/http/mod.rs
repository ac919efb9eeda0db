//! The HTTP front door of the backend: routes, request extraction, the OpenAPI document.

pub mod admin_api;
pub mod callbacks_api;
pub mod client_api;
pub mod device_api;
pub mod extract;
pub mod openapi;
pub mod pages;
