//! The Ruby script side's own unit tests (sides/ruby/test: the wire
//! vectors, and each role on real processes, fds and terminals), run as
//! its README says, a file at a time.

use std::path::PathBuf;
use std::process::Command;

fn ruby_side() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sides/ruby")
}

/// Every test/test_*.rb passes, and each ran some tests.
#[test]
fn ruby_side_unit_tests_pass() {
    let mut files: Vec<String> = std::fs::read_dir(ruby_side().join("test"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("test_") && name.ends_with(".rb"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "{files:?}");
    for file in files {
        let out = Command::new("ruby")
            .args(["-Ilib", "-Itest", &format!("test/{file}")])
            .current_dir(ruby_side())
            .output()
            .expect("ruby (./test installs Debian's)");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{file}: minitest failed:\n{said}");
        let summary = said
            .lines()
            .find(|line| line.contains(" runs, "))
            .unwrap_or_else(|| panic!("{file}: no minitest summary:\n{said}"));
        let runs: u32 = summary.split(' ').next().unwrap().parse().unwrap();
        assert!(runs > 0, "{file}: {summary}");
        assert!(
            summary.contains(" 0 failures, 0 errors, 0 skips"),
            "{file}: {summary}"
        );
    }
}
