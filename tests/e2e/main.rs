//! End-to-end tests over real HTTP: Hermod started on a random port with its own SQLite file,
//! real callback receivers, simulated devices, and the `hermod` binary itself.

mod admin;
mod approval;
mod bad_input;
mod bench;
mod callbacks;
mod certs;
mod cli;
mod cycle;
mod deploy;
mod durability;
mod edge;
mod edge_channel;
mod egress;
mod harness;
mod isolation;
mod keys;
mod limits;
mod ordering;
mod outage;
mod plans;
mod push;
mod replicas;
mod retention;
mod tls;
mod wakeup;
