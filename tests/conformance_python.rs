//! The conformance table for the Python script side
//! (sides/python/prefork_interp, through tests/agents/agent.py).
mod common;
#[path = "common/scenarios.rs"]
mod scenarios;

fn main() -> std::process::ExitCode {
    scenarios::main(common::Side::Python)
}
