//! The conformance table for the Ruby script side
//! (sides/ruby/lib/prefork_interp, through tests/agents/agent.rb).
mod common;
#[path = "common/scenarios.rs"]
mod scenarios;

fn main() -> std::process::ExitCode {
    scenarios::main(common::Side::Ruby)
}
