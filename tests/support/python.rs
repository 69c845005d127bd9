//! The one lookup of the python3 executable, for the test harness
//! (tests/common) and the benchmark (examples/callbench.rs), which
//! include it with `#[path]`.

use std::path::PathBuf;
use std::process::Command;

/// The python3 executable itself, not a wrapper script: a #! line naming
/// a pyenv shim would need the real HOME (which the tests replace) and
/// costs ~50 ms a run (which the benchmark would measure). The first
/// python3 on PATH: in a Debian tree (tools/tables-in), whose PATH is
/// the tree's, the tree's /usr/bin/python3.
pub fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let out = Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .expect("python3 is needed for the Python tests and benchmarks");
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        })
        .clone()
}
