//! The one reader of /proc/PID/stat, for every program of the test tree:
//! the test harness (tests/common), the Rust agent (tests/agents/agent.rs)
//! and the benchmark (examples/callbench.rs) include it with `#[path]`.

/// The state letter and parent pid of `pid` (/proc/PID/stat); `None`
/// once it is gone.
pub fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold anything, ')' included: after the last.
    let mut fields = stat[stat.rfind(')')? + 2..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}
