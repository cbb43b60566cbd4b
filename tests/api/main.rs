//! Integration tests against a real broker process (Tansu) over TCP.
//! Every test uses its own topic and consumer group.

// Helpers are `pub` for their sibling modules; this crate exports nothing.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod faults;
mod helpers;
mod ops;
mod orders;
mod process;
mod replicas;
mod stream;
mod watchdog;
