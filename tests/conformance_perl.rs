//! The conformance table for the Perl script side
//! (scripts/perl/Proc/Prefork/Interp.pm, through tests/agents/agent.pl).
mod common;

use common::Side;

conformance_suite!(Side::Perl);
