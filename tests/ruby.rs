//! The Ruby script side (sides/ruby), so far its wire codec: its own unit
//! tests over sides/wire-vectors.json, run as its README says.

use std::path::PathBuf;
use std::process::Command;

fn ruby_side() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sides/ruby")
}

/// The side's unit tests (test/test_wire.rb: every vector group the
/// codec has) pass, and some ran.
#[test]
fn ruby_side_unit_tests_pass() {
    let out = Command::new("ruby")
        .args(["-Ilib", "-Itest", "test/test_wire.rb"])
        .current_dir(ruby_side())
        .output()
        .expect("ruby (./test installs Debian's)");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "minitest failed:\n{said}");
    let summary = said
        .lines()
        .find(|line| line.contains(" runs, "))
        .unwrap_or_else(|| panic!("no minitest summary:\n{said}"));
    let runs: u32 = summary.split(' ').next().unwrap().parse().unwrap();
    assert!(runs > 0, "{summary}");
    assert!(
        summary.contains(" 0 failures, 0 errors, 0 skips"),
        "{summary}"
    );
}
