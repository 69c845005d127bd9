//! The Ruby script side's own unit tests (sides/ruby/test: the wire
//! vectors, and each role on real processes, fds and terminals), run as
//! its README says, a file at a time; and what the client does for a
//! Ruby server's start.
mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Harness, Side, client, repo};

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
        // The runner's tests call the client: this build's.
        let out = Command::new("ruby")
            .args(["-Ilib", "-Itest", &format!("test/{file}")])
            .env("CARGO_BIN_EXE_prefork-interp", client())
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

/// The environment read above `require "prefork_interp"` (by the script,
/// or a library it requires first) is an input of the initialisation
/// too, where Ruby finds the library from its start (here `-I` in the
/// `#!` line): the client starts a server with `-r` of a file of its
/// run directory that loads the side's tracking first of all.
#[test]
fn environment_read_before_the_require_like_a_direct_run() {
    let lib = format!("-I{}", repo().join("sides/ruby/lib").display());
    let h = Harness::custom(
        Side::Ruby,
        client(),
        vec!["ruby".into(), lib.into()],
        None,
        "early = ENV[\"PFI_EARLY\"]\nkept = ENV.fetch(\"PFI_KEPT\", nil)\n\
         require \"prefork_interp\"\nPreforkInterp.initialisation_complete\n\
         puts \"#{early.inspect} #{kept.inspect}\"\n",
    );
    let cases: [&[(&str, &str)]; 4] = [
        &[("PFI_EARLY", "first")],
        &[("PFI_EARLY", "second")],
        &[("PFI_EARLY", "first"), ("PFI_KEPT", "k")],
        &[],
    ];
    h.same_stdout_as_direct_under(&cases);
    h.finish();
}
