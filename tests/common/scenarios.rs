//! The conformance table: every scenario, written once, for every script
//! side. Each takes the [`Side`] and speaks to its agent only through the
//! agent language (tests/agents/agent.rs documents it).
//!
//! A scenario is registered where it is written, `scenario!(NAME, |side|
//! { ... })`, and each side's conformance target runs every registered
//! one as a test called NAME ([`main`]): there is no second list to keep in
//! step. The conformance targets include this file with `#[path]`; the
//! other test targets, which share only `common`, do not carry it.

// A scenario's `///` comment stands on its `scenario!` call, where the
// reader looks for it; rustdoc never sees test code, so that it documents
// a macro call rather than an item costs nothing.
#![allow(unused_doc_comments)]

use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::time::Duration;

use crate::common::*;

/// One entry of the table: a scenario and the test name it runs under.
pub struct Scenario {
    pub name: &'static str,
    pub run: fn(Side),
}

inventory::collect!(Scenario);

/// Registers a scenario under its name. Both arguments are expressions so
/// that rustfmt formats the body. The scenario becomes a function of that
/// name (backtraces show it; a second scenario of the same name is a
/// compile error in its file, and [`main`] refuses one in another) and an
/// entry of the table.
macro_rules! scenario {
    ($name:ident, $run:expr $(,)?) => {
        fn $name(side: Side) {
            let run: fn(Side) = $run;
            run(side)
        }
        inventory::submit! {
            Scenario {
                name: stringify!($name),
                run: $name,
            }
        }
    };
}

#[path = "../support/trials.rs"]
mod trials;

/// The `main` of a side's conformance target: one test per scenario,
/// named exactly as the scenario, so that libtest's and nextest's filters
/// (`--exact NAME`, `-E 'test(NAME)'`) select it.
pub fn main(side: Side) -> ExitCode {
    // The theme files are modules of their own, so two scenarios of one
    // name in two of them would compile: the table refuses them here.
    let mut names: Vec<&str> = inventory::iter::<Scenario>
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        panic!("two scenarios are called {}", pair[0]);
    }
    trials::run(
        inventory::iter::<Scenario>
            .into_iter()
            .map(|s| trials::Trial {
                name: s.name,
                run: Box::new(move || (s.run)(side)),
            })
            .collect(),
    )
}

// The scenarios, by theme.
#[path = "scenarios/budget.rs"]
mod budget;
#[path = "scenarios/calls.rs"]
mod calls;
#[path = "scenarios/context.rs"]
mod context;
#[path = "scenarios/faults.rs"]
mod faults;
#[path = "scenarios/identity.rs"]
mod identity;
#[path = "scenarios/job_control.rs"]
mod job_control;
#[path = "scenarios/reload.rs"]
mod reload;
#[path = "scenarios/servers.rs"]
mod servers;
#[path = "scenarios/signals.rs"]
mod signals;
#[path = "scenarios/terminal.rs"]
mod terminal;
#[path = "scenarios/wire.rs"]
mod wire;

// Helpers that scenarios of several themes use.

const LIMIT: Duration = Duration::from_secs(10);

/// Starts a call that runs until told to finish, and waits until its
/// executor is running. Returns the child and the go-ahead file.
fn start_long_call(h: &Harness, name: &str) -> (std::process::Child, std::path::PathBuf) {
    let pid_file = h.path(&format!("{name}.pid"));
    let child = h
        .call(&[
            format!("@pid:{}", pid_file.display()),
            "@sleep:1".into(),
            "@out:finished".into(),
        ])
        .spawn();
    wait_until("the long call to start", LIMIT, || pid_file.exists()).unwrap();
    (child, pid_file)
}

/// All of a run at once (exit code, signal, stdout, stderr), to compare
/// with another: a difference shows the whole of both (the client's own
/// message, say, next to a status that differs).
fn outcome(out: std::process::Output) -> (Option<i32>, Option<i32>, String, String) {
    (
        out.status.code(),
        out.status.signal(),
        stdout_str(&out),
        stderr_str(&out),
    )
}

/// The pid a call wrote with `@pid:NAME` in the world's directory (the
/// shell's, so the call's), once it is there.
fn pid_in(h: &Harness, name: &str) -> u32 {
    let path = h.path(name);
    wait_until("the script to write its pid", LIMIT, || path.exists()).unwrap();
    // (Trimmed: a shell's `echo $$` ends it with a newline.)
    std::fs::read_to_string(&path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn sigkill(pid: u32) {
    // SAFETY: kill(2) on a test process.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}
