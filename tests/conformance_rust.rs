//! The conformance table for the Rust script side (examples/agent.rs).
mod common;

use common::Side;

conformance_suite!(Side::Rust);
