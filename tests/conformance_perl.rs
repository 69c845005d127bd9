//! The conformance table for the Perl script side
//! (sides/perl/lib/Proc/Prefork/Interp.pm, through tests/agents/agent.pl).
mod common;
#[path = "common/scenarios.rs"]
mod scenarios;

fn main() -> std::process::ExitCode {
    scenarios::main(common::Side::Perl)
}
