//! What is not the server: the benchmark (and its floor), the callback receiver, client
//! generation. They drive the server over HTTP like any other peer; the device they use is the
//! SDK (`hermod-device`).

pub mod bench;
pub mod gen_client;
pub mod receiver;
