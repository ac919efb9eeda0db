//! The rules of Hermod, pure: no I/O, no clock, no database, no HTTP. Everything here takes
//! what it needs as arguments (the time included) and is unit- and property-tested alone; the
//! store applies its verdicts, the HTTP layer turns its refusals into answers.
#![forbid(unsafe_code)]

pub mod approval;
pub mod callback;
pub mod command;
pub mod egress;
pub mod error;
pub mod push;
