//! The conformance table for the Python script side
//! (scripts/python/prefork_interp, through tests/agents/agent.py).
mod common;

use common::Side;

conformance_suite!(Side::Python);
