//! The conformance table for the Rust script side (tests/agents/agent.rs).
mod common;
#[path = "common/scenarios.rs"]
mod scenarios;

fn main() -> std::process::ExitCode {
    scenarios::main(common::Side::Rust)
}
