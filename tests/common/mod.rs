//! Test harness shared by the conformance suites and the client tests.
//!
//! A [`Harness`] is one private world: a temporary directory holding the
//! run directory (`XDG_RUNTIME_DIR`), `HOME`, and an executable `#!` script
//! whose interpreter is the real `prefork-interp` binary and whose
//! script side is the agent of one [`Side`]. Calls run that script through
//! the kernel, exactly as a user would. [`Harness::finish`] tears the
//! server down and fails the test if any process or run-directory file of
//! this world is left behind.

#![allow(dead_code)]

mod packages;
#[path = "../support/proc_stat.rs"]
mod proc_stat;
#[path = "../support/python.rs"]
mod python;

// (Not every test binary builds packages.)
#[allow(unused_imports)]
pub use packages::*;
pub use proc_stat::proc_state;
pub use python::python;

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The client binary under test.
pub fn client() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_prefork-interp"))
}

/// A built example program (cargo builds examples for `cargo test` and
/// `cargo nextest run`).
pub fn example(name: &str) -> PathBuf {
    let path = client().parent().unwrap().join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples (cargo test and cargo nextest run do)",
        path.display()
    );
    path
}

/// A script-side implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The Rust library, through tests/agents/agent.rs.
    Rust,
    /// sides/perl/lib/Proc/Prefork/Interp.pm, through tests/agents/agent.pl,
    /// as `#!prefork-interp -U,perl,-w`.
    Perl,
    /// sides/python/prefork_interp, through tests/agents/agent.py, as
    /// `#!prefork-interp -U,PYTHON` (the real executable: a pyenv shim on
    /// PATH would need the real HOME, which the tests replace).
    Python,
    /// sides/ruby/lib/prefork_interp.rb, through tests/agents/agent.rb, as
    /// `#!prefork-interp -U,ruby`.
    Ruby,
}

/// The Ruby agent's script text (after the #! line).
pub fn ruby_agent_body() -> String {
    format!(
        "$LOAD_PATH.unshift '{}'\n{}",
        repo().join("sides/ruby/lib").display(),
        include_str!("../agents/agent.rb")
    )
}

/// The Python agent's script text (after the #! line).
pub fn python_agent_body() -> String {
    format!(
        "import sys; sys.path.insert(0, '{}')\n{}",
        repo().join("sides/python").display(),
        include_str!("../agents/agent.py")
    )
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Perl agent's script text (after the #! line). With `ours`, it loads
/// this project's module; without, whichever `Proc::Prefork::Interp` perl
/// finds (chiark-scripts' in /usr/share/perl5).
pub fn perl_agent_body(ours: bool) -> String {
    let mut body = String::new();
    if ours {
        body += &format!("use lib '{}';\n", repo().join("sides/perl/lib").display());
    }
    body + include_str!("../agents/agent.pl")
}

impl Side {
    /// The interpreter words of the #! line (after `-U,`).
    fn interpreter(&self, program: &Path) -> Vec<OsString> {
        match self {
            Side::Rust => vec![program.as_os_str().to_owned()],
            Side::Perl => vec!["perl".into(), "-w".into()],
            Side::Python => vec![python().into()],
            Side::Ruby => vec!["ruby".into()],
        }
    }

    /// The agent program for sides whose program is not the script.
    fn agent_program(&self) -> Option<PathBuf> {
        match self {
            Side::Rust => Some(example("agent")),
            Side::Perl | Side::Python | Side::Ruby => None,
        }
    }

    /// The text of the script after its #! line.
    fn script_body(&self) -> String {
        match self {
            Side::Rust => String::new(),
            Side::Perl => perl_agent_body(true),
            Side::Python => python_agent_body(),
            Side::Ruby => ruby_agent_body(),
        }
    }
}

pub struct Harness {
    pub side: Side,
    dir: tempfile::TempDir,
    /// The executable #! script.
    pub script: PathBuf,
    /// The file whose change means "reload" (the agent program or script).
    pub program: PathBuf,
    /// The client in the script's #! line.
    pub client: PathBuf,
    /// Run every call in one mount namespace of the test's, with this
    /// directory bound over /run, held by a sleeping process (see
    /// [`Harness::with_private_run`]).
    private_run: Option<(PathBuf, NamespaceHolder)>,
    interpreter: Vec<OsString>,
    finished: bool,
}

impl Harness {
    pub fn new(side: Side) -> Self {
        Self::build(side, false)
    }

    /// Like [`new`](Self::new), but the program is a private copy that
    /// the test may touch without disturbing other tests' servers.
    pub fn with_private_program(side: Side) -> Self {
        Self::build(side, true)
    }

    /// Like [`new`](Self::new), for calls made [`Call::by_user`]: a
    /// Python side runs Debian's /usr/bin/python3, which any user may run
    /// (the tests' own may be under root's home).
    pub fn for_other_users(side: Side) -> Self {
        let python = PathBuf::from("/usr/bin/python3");
        assert!(python.exists(), "{} is needed", python.display());
        Self::build_with(side, false, (side == Side::Python).then_some(python))
    }

    fn build(side: Side, private: bool) -> Self {
        Self::build_with(side, private, None)
    }

    /// `python`: the interpreter of a Python side, if not the tests' own.
    fn build_with(side: Side, private: bool, python: Option<PathBuf>) -> Self {
        let dir = new_world_dir();
        // The file whose change means "reload": the agent program, or the
        // script itself for interpreted sides.
        let program = match side.agent_program() {
            Some(agent) if private => {
                let copy = dir.path().join("agent-copy");
                std::fs::copy(&agent, &copy).unwrap();
                copy
            }
            Some(agent) => agent,
            None => dir.path().join("agent-script"),
        };
        let interpreter = match python {
            Some(python) => vec![python.into()],
            None => side.interpreter(&program),
        };
        Self::assemble(
            side,
            dir,
            client(),
            interpreter,
            program,
            &side.script_body(),
        )
    }

    /// A world whose script uses another client (chiark's, say) or other
    /// script text. `program` is the file whose change means "reload".
    pub fn custom(
        side: Side,
        client: PathBuf,
        interpreter: Vec<OsString>,
        program: Option<PathBuf>,
        body: &str,
    ) -> Self {
        let dir = new_world_dir();
        let program = program.unwrap_or_else(|| dir.path().join("agent-script"));
        Self::assemble(side, dir, client, interpreter, program, body)
    }

    fn assemble(
        side: Side,
        dir: tempfile::TempDir,
        client: PathBuf,
        interpreter: Vec<OsString>,
        program: PathBuf,
        body: &str,
    ) -> Self {
        let script = dir.path().join("agent-script");
        let mut text = Vec::new();
        text.extend_from_slice(b"#!");
        text.extend_from_slice(client.as_os_str().as_bytes());
        text.extend_from_slice(b" -U,");
        text.extend_from_slice(&join_commas(&interpreter));
        text.push(b'\n');
        text.extend_from_slice(body.as_bytes());
        std::fs::write(&script, text).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Harness {
            side,
            dir,
            script,
            program,
            client,
            private_run: None,
            interpreter,
            finished: false,
        }
    }

    /// Makes every call see a private /run holding `/run/user/UID` (mode
    /// 0700), in a mount namespace of the test's own (root only). For
    /// clients that, like chiark's, use /var/run/user/UID or the password
    /// database's home and cannot be pointed elsewhere. One namespace for
    /// all calls, held by a sleeping process: the mount namespace is part
    /// of our client's identity, so a namespace per call would make every
    /// call a cold one.
    pub fn with_private_run(mut self) -> Self {
        let run = self.path("private-run");
        let user = run.join("user").join(nix::unistd::getuid().to_string());
        std::fs::create_dir_all(&user).unwrap();
        std::fs::set_permissions(&user, std::fs::Permissions::from_mode(0o700)).unwrap();
        let holder = NamespaceHolder::after(
            &["--mount", "--propagation", "private"],
            &["mount", "--bind", run.to_str().unwrap(), "/run"],
        );
        self.private_run = Some((run, holder));
        self
    }

    /// A command for `program`, inside the private /run if there is one.
    fn command(&self, program: &OsStr) -> Command {
        match &self.private_run {
            None => Command::new(program),
            Some((_, holder)) => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--mount=/proc/{}/ns/mnt", holder.pid))
                    .arg("--")
                    .arg(program);
                cmd
            }
        }
    }

    /// Ends the private /run's holder, if there is one.
    fn end_private_run(&mut self) {
        self.private_run = None;
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Makes the world's directory and everything in it `uid`'s, for calls
    /// made [`Call::by_user`].
    pub fn give_to(&self, uid: u32, gid: u32) {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(self.dir())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The run directory (BASE) the client uses in this world: under
    /// XDG_RUNTIME_DIR, or in the private /run (chiark's client) if there
    /// is one.
    pub fn base(&self) -> PathBuf {
        match &self.private_run {
            None => self.path("run"),
            Some((run, _)) => run.join("user").join(nix::unistd::getuid().to_string()),
        }
        .join("prefork-interp")
    }

    /// The environment every call gets, unless a test adds to it.
    pub fn base_env(&self) -> Vec<(OsString, OsString)> {
        vec![
            ("PATH".into(), std::env::var_os("PATH").unwrap_or_default()),
            ("HOME".into(), self.path("home").into()),
            ("XDG_RUNTIME_DIR".into(), self.path("run").into()),
        ]
    }

    fn prepare(&self, mut cmd: Command) -> Call {
        cmd.env_clear()
            .envs(self.base_env())
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Call { cmd, stdin: None }
    }

    /// A call of the script, through the kernel's #! handling.
    pub fn call<S: AsRef<OsStr>>(&self, args: &[S]) -> Call {
        let mut cmd = self.command(self.script.as_os_str());
        cmd.args(args);
        self.prepare(cmd)
    }

    /// The client run by hand with extra options in the combined form
    /// (`-U,OPTIONS...,INTERP SCRIPT ARGS`): same identity as [`call`].
    pub fn call_with_options<S: AsRef<OsStr>>(&self, options: &[&str], args: &[S]) -> Call {
        let mut first = b"-U,".to_vec();
        for o in options {
            first.extend_from_slice(o.as_bytes());
            first.push(b',');
        }
        self.combined_call(first, args)
    }

    /// The client run by hand in the combined form led by a long option
    /// (`--kill,-U,INTERP SCRIPT ARGS`), as chiark-utils documents it.
    pub fn call_led_by<S: AsRef<OsStr>>(&self, option: &str, args: &[S]) -> Call {
        self.combined_call(format!("{option},-U,").into_bytes(), args)
    }

    /// `FIRST` + the interpreter's words, comma-separated, then the script
    /// and `args`.
    fn combined_call<S: AsRef<OsStr>>(&self, mut first: Vec<u8>, args: &[S]) -> Call {
        first.extend_from_slice(&join_commas(&self.interpreter));
        let mut cmd = self.command(self.client.as_os_str());
        cmd.arg(OsStr::from_bytes(&first))
            .arg(&self.script)
            .args(args);
        self.prepare(cmd)
    }

    /// The script run directly and through us (twice) under each set of
    /// environment variables: the same stdout. Then each set's server
    /// goes, the first set's last: it has the base identity, which the
    /// others found and moved on from.
    pub fn same_stdout_as_direct_under(&self, cases: &[&[(&str, &str)]]) {
        let with = |call: Call, env: &[(&str, &str)]| {
            env.iter()
                .fold(call, |call, (name, value)| call.env(name, value))
        };
        for round in 0..2 {
            for env in cases {
                let direct = with(self.direct(&[] as &[&str]), env).run();
                let served = with(self.call(&[] as &[&str]), env).run();
                assert_success(&direct);
                assert_eq!(
                    stdout_str(&served),
                    stdout_str(&direct),
                    "{env:?}, round {round}: through us, then directly"
                );
            }
        }
        for env in cases.iter().rev() {
            assert_success(&with(self.call_with_options(&["--kill"], &[] as &[&str]), env).run());
        }
    }

    /// The client run by hand with these arguments, in this world.
    pub fn client_call<S: AsRef<OsStr>>(&self, args: &[S]) -> Call {
        let mut cmd = Command::new(&self.client);
        cmd.args(args);
        self.prepare(cmd)
    }

    /// The identities `--list --json` shows in this world.
    pub fn listed_idents(&self) -> Vec<String> {
        let out = self.client_call(&["--list", "--json"]).run();
        assert_success(&out);
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        listed
            .as_array()
            .map(|servers| {
                servers
                    .iter()
                    .filter_map(|s| Some(s["ident"].as_str()?.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `--list`'s line for the server whose pid is `pid`, split in columns.
    pub fn listed(&self, pid: u32) -> Vec<String> {
        let out = self.client_call(&["--list"]).run();
        assert_success(&out);
        let text = stdout_str(&out);
        assert!(text.starts_with("IDENT "), "{text}");
        text.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .find(|cols| cols.get(1) == Some(&pid.to_string()))
            .unwrap_or_else(|| panic!("server {pid} not listed:\n{text}"))
    }

    /// The words that run the script side standalone (no
    /// prefork-interp): its interpreter and the script, or the program.
    pub fn direct_words(&self) -> Vec<OsString> {
        match self.side {
            Side::Rust => vec![self.program.clone().into()],
            // The #! line's interpreter and its words (perl -w; the
            // tests' python3, or /usr/bin/python3 for other users).
            Side::Perl | Side::Python | Side::Ruby => {
                let mut words = self.interpreter.clone();
                words.push(self.script.clone().into());
                words
            }
        }
    }

    /// Runs the script side standalone (no prefork-interp).
    pub fn direct<S: AsRef<OsStr>>(&self, args: &[S]) -> Call {
        let words = self.direct_words();
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..]).args(args);
        self.prepare(cmd)
    }

    /// `--kill` for this world's server.
    pub fn kill_server(&self) -> Output {
        self.call_with_options(&["--kill"], &[] as &[&str]).run()
    }

    /// Starts a call whose executor runs `args` then sleeps 30 s; returns
    /// the client and the executor's pid once the executor is running.
    pub fn start_sleeper(&self, name: &str, args: &[&str]) -> (Child, u32) {
        let pid_file = self.path(&format!("{name}.pid"));
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.push(format!("@pid:{}", pid_file.display()));
        all.push("@sleep:30".into());
        let child = self.call(&all).spawn();
        wait_until("the executor to start", Duration::from_secs(10), || {
            pid_file.exists()
        })
        .unwrap();
        let pid = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
        (child, pid)
    }

    /// The server's pid, asked of a call.
    pub fn server_pid(&self) -> u32 {
        let out = self.call(&["@server"]).run();
        assert_success(&out);
        stdout_str(&out).trim().parse().unwrap()
    }

    /// The stdout of a successful call with no arguments (scripts made by
    /// [`Harness::custom`] that print something of their own).
    pub fn plain_call(&self) -> String {
        let out = self.call(&[] as &[&str]).run();
        assert_success(&out);
        stdout_str(&out)
    }

    /// Live (non-zombie) processes of this world: any whose command line
    /// or environment at exec mentions its directory (clients, setup
    /// runs, executors, scripts; interpreted sides' servers through the
    /// script's path); any holding a socket bound in it (servers, and
    /// what holds a call accepted there); their descendants (monitors,
    /// handlers, executors); and any whose stdin is a pipe such a server
    /// holds beyond its stdio (watchers). Long-lived processes keep no
    /// caller's environment, and a Rust program's title need not name
    /// the directory. (Never by a pipe of a process found otherwise: a
    /// client's stdin may be the pipe the test runner itself reads.)
    pub fn processes(&self) -> Vec<(u32, String)> {
        let needle = self.dir().as_os_str().as_bytes();
        let mentions = |text: &[u8]| text.windows(needle.len()).any(|w| w == needle);
        let me = std::process::id();
        // Sockets bound under the world's directory, by inode.
        let bound: Vec<String> = std::fs::read_to_string("/proc/net/unix")
            .unwrap_or_default()
            .lines()
            .filter(|line| mentions(line.as_bytes()))
            .filter_map(|line| Some(format!("socket:[{}]", line.split_whitespace().nth(6)?)))
            .collect();
        struct Seen {
            pid: u32,
            ppid: u32,
            shown: String,
            /// What its fds 3 and up are.
            fds: Vec<String>,
            stdin: Option<String>,
            mentioned: bool,
        }
        let mut all = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me || !alive(pid) {
                continue;
            }
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let fds: Vec<String> = std::fs::read_dir(entry.path().join("fd"))
                .map(|dir| {
                    dir.flatten()
                        .filter(|fd| {
                            let number =
                                fd.file_name().to_str().and_then(|n| n.parse::<u32>().ok());
                            number.is_some_and(|n| n > 2)
                        })
                        .filter_map(|fd| {
                            Some(std::fs::read_link(fd.path()).ok()?.display().to_string())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let stdin = std::fs::read_link(entry.path().join("fd/0"))
                .ok()
                .map(|p| p.display().to_string());
            all.push(Seen {
                pid,
                ppid: proc_state(pid).map_or(0, |(_, ppid)| ppid),
                shown: String::from_utf8_lossy(&cmdline).replace('\0', " "),
                mentioned: mentions(&cmdline) || mentions(&environ),
                fds,
                stdin,
            });
        }
        let servers: std::collections::BTreeSet<u32> = all
            .iter()
            .filter(|p| p.fds.iter().any(|fd| bound.contains(fd)))
            .map(|p| p.pid)
            .collect();
        // Watchers: their stdin is a pipe a server holds (WATCHI).
        let pipes: Vec<&String> = all
            .iter()
            .filter(|p| servers.contains(&p.pid))
            .flat_map(|p| p.fds.iter().filter(|fd| fd.starts_with("pipe:")))
            .collect();
        let watchers: Vec<u32> = all
            .iter()
            .filter(|p| p.stdin.as_ref().is_some_and(|stdin| pipes.contains(&stdin)))
            .map(|p| p.pid)
            .collect();
        // The servers' descendants.
        let mut found = servers;
        loop {
            let more: Vec<u32> = all
                .iter()
                .filter(|p| found.contains(&p.ppid) && !found.contains(&p.pid))
                .map(|p| p.pid)
                .collect();
            if more.is_empty() {
                break;
            }
            found.extend(more);
        }
        found.extend(watchers);
        all.into_iter()
            .filter(|p| p.mentioned || found.contains(&p.pid))
            .map(|p| (p.pid, p.shown))
            .collect()
    }

    /// The server socket of this world (there must be exactly one).
    pub fn socket(&self) -> PathBuf {
        let sockets: Vec<PathBuf> = std::fs::read_dir(self.base())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('s'))
            .map(|e| e.path())
            .collect();
        assert_eq!(sockets.len(), 1, "{sockets:?}");
        sockets[0].clone()
    }

    /// Files left in the run directory.
    pub fn run_dir_entries(&self) -> Vec<String> {
        match std::fs::read_dir(self.base()) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Tears the server down and checks nothing of this world is left.
    /// Servers of callers whose stdio differed (a terminal's, a
    /// pipeline's: initialised with terminals where those had them) have
    /// identities of their own, and go by identity, from `--list` (our
    /// client's: chiark-utils' knows no terminals, and no `--list`).
    pub fn finish(mut self) {
        self.finished = true;
        let out = self.kill_server();
        assert_success(&out);
        if self.client == client() {
            for ident in self.listed_idents() {
                assert_success(&self.client_call(&["--kill", "-g", &ident]).run());
            }
        }
        self.end_private_run();
        wait_until(
            "every process of the test to exit",
            Duration::from_secs(10),
            || self.processes().is_empty(),
        )
        .unwrap_or_else(|e| panic!("{e}: {:#?}", self.processes()));
        assert_eq!(
            self.run_dir_entries(),
            Vec::<String>::new(),
            "run directory not empty"
        );
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.kill_server();
            self.end_private_run();
            std::thread::sleep(Duration::from_millis(100));
            for (pid, _) in self.processes() {
                // SAFETY: killing a test process by pid.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// A private directory for a test's world: a run directory (`run`, mode
/// 0700) and a `home` in it.
pub fn new_world_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pfi-test-")
        .tempdir()
        .unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir(dir.path().join("home")).unwrap();
    dir
}

fn join_commas(words: &[OsString]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(w.as_bytes());
    }
    out
}

/// One call being set up.
pub struct Call {
    pub cmd: Command,
    stdin: Option<Vec<u8>>,
}

/// A command of the test's own, as a call (to run it [`inside`](Call::inside)
/// a [`NamespaceHolder`]'s namespaces, say).
impl From<Command> for Call {
    fn from(cmd: Command) -> Call {
        Call { cmd, stdin: None }
    }
}

impl Call {
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn stdin_bytes(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.cmd.stdin(Stdio::piped());
        self.stdin = Some(data.into());
        self
    }

    /// Starts the client with SIGINT ignored, as a background job of a
    /// non-interactive shell is.
    pub fn ignoring_sigint(self) -> Self {
        self.ignoring(libc::SIGINT)
    }

    /// Runs with RLIMIT_CORE 0: a death by a core-dumping signal then
    /// writes no core, and its status says none was (the same for a
    /// direct run and a call, whatever the machine's default).
    pub fn without_core(mut self) -> Self {
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            self.cmd.pre_exec(|| {
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                Ok(())
            });
        }
        self
    }

    /// Starts the client with `signal` ignored.
    pub fn ignoring(mut self, signal: libc::c_int) -> Self {
        // SAFETY: signal() is async-signal-safe.
        unsafe {
            self.cmd.pre_exec(move || {
                libc::signal(signal, libc::SIG_IGN);
                Ok(())
            });
        }
        self
    }

    /// Starts the client with the soft limit of `resource` at `soft` (its
    /// hard limit as it is), as `ulimit -S` would.
    pub fn soft_limit(mut self, resource: libc::__rlimit_resource_t, soft: u64) -> Self {
        // SAFETY: getrlimit and setrlimit are async-signal-safe.
        unsafe {
            self.cmd.pre_exec(move || {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(resource, &mut limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                limit.rlim_cur = soft;
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self
    }

    /// Runs the call as `uid`/`gid`, with no supplementary groups (its
    /// world must be the user's: [`Harness::give_to`]).
    pub fn by_user(mut self, uid: u32, gid: u32) -> Self {
        // SAFETY: setgroups, setresgid and setresuid are async-signal-safe.
        unsafe {
            self.cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(gid, gid, gid) != 0
                    || libc::setresuid(uid, uid, uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self
    }

    /// Starts the client with `signal` blocked.
    pub fn blocking(mut self, signal: libc::c_int) -> Self {
        // SAFETY: sigprocmask on a set of our own is async-signal-safe.
        unsafe {
            self.cmd.pre_exec(move || {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, signal);
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        self
    }

    /// The same call run inside every namespace of process `holder`
    /// (`nsenter --all`), in the same directory. Call it first: what was
    /// set up to run before exec (pre_exec) is not carried over.
    pub fn inside(self, holder: u32) -> Self {
        let old = self.cmd;
        // Entering a mount namespace (--all enters the holder's even when
        // it is ours) moves the process to that namespace's root: without
        // --wd the call would run in `/`, and its directory alone would
        // give it another server, whatever its namespaces.
        let dir = match old.get_current_dir() {
            Some(dir) => dir.to_owned(),
            None => std::env::current_dir().unwrap(),
        };
        let mut wd = OsString::from("--wd=");
        wd.push(&dir);
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={holder}"))
            .arg("--all")
            .arg(wd)
            .arg("--")
            .arg(old.get_program())
            .args(old.get_args())
            .env_clear();
        for (name, value) in old.get_envs() {
            if let Some(value) = value {
                cmd.env(name, value);
            }
        }
        cmd.current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Call {
            cmd,
            stdin: self.stdin,
        }
    }

    /// Moves the program into the cgroup (v2) directory `cgroup` before it
    /// runs.
    pub fn in_cgroup(mut self, cgroup: &Path) -> Self {
        let procs =
            std::ffi::CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
        // SAFETY: open, write and close are async-signal-safe; `procs`
        // was made before the fork.
        unsafe {
            self.cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        self
    }

    /// Runs the program with fd `fd` closed, as `<&-` (fd 0), `>&-` (1) or
    /// `2>&-` (2) would.
    pub fn closing(mut self, fd: libc::c_int) -> Self {
        // SAFETY: close() is async-signal-safe.
        unsafe {
            self.cmd.pre_exec(move || {
                libc::close(fd);
                Ok(())
            });
        }
        self
    }

    /// Gives the client an extra inheritable fd (7, a /dev/null), as a
    /// caller may leak one: it must not reach the server or the script.
    pub fn with_stray_fd(mut self) -> Self {
        let null = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: dup2 is async-signal-safe; `null` outlives the spawn.
        unsafe {
            self.cmd.pre_exec(move || {
                if libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 7) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self
    }

    pub fn spawn(mut self) -> Child {
        // When tests share a process (cargo test runs them on threads), a
        // script this process has just written may still be open for
        // writing in a child that another thread forked and that has not
        // yet exec'd: exec then fails with ETXTBSY for that moment.
        let mut tries = 0;
        let mut child = loop {
            match self.cmd.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                spawned => break spawned.unwrap(),
            }
        };
        if let Some(data) = self.stdin.take() {
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            });
        }
        child
    }

    pub fn run(self) -> Output {
        self.spawn().wait_with_output().unwrap()
    }
}

/// Runs `cmd` with `stdin` as its standard input (written from a thread:
/// a child that writes much before it reads cannot block us) and waits
/// for it; its output goes where `cmd` says (pipes are collected).
pub fn output_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

pub fn stdout_str(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr_str(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "call failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout_str(out),
        stderr_str(out)
    );
}

/// Runs `cmd` (a tool the test needs: `install` says which package brings
/// it), which must succeed; its output.
#[track_caller]
pub fn succeeded(cmd: &mut Command, install: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} ({install})"));
    assert!(
        out.status.success(),
        "{cmd:?}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout_str(&out),
        stderr_str(&out)
    );
    out
}

/// A run through us (`through`) did what a direct run did: the same
/// status, stdout and stderr, byte for byte. `what` names the run.
#[track_caller]
pub fn assert_same_run(through: &Output, direct: &Output, what: &str) {
    let seen = |out: &Output| {
        (
            out.status.code(),
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            stdout_str(out),
            stderr_str(out),
        )
    };
    assert_eq!(
        seen(through),
        seen(direct),
        "{what}: through us (left) vs directly (right)"
    );
    assert_eq!(through.stdout, direct.stdout, "{what}: stdout's bytes");
    assert_eq!(through.stderr, direct.stderr, "{what}: stderr's bytes");
}

/// `rounds` runs through us, the first cold and the rest warm, each
/// doing what the direct run did ([`assert_same_run`]); `what` names
/// them, `through` makes one.
#[track_caller]
pub fn assert_rounds_same_as_direct(
    direct: &Output,
    rounds: usize,
    what: &str,
    mut through: impl FnMut() -> Output,
) {
    for round in 0..rounds {
        assert_same_run(&through(), direct, &format!("{what}, call {round}"));
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sets a file's mtime to the kernel's "now", as a real edit would (the
/// kernel stamps files with a coarse clock; a finer user-space time could
/// lie ahead of the next server's start). Waits a moment first, so the
/// server's start and the touch are not in the same clock tick.
pub fn touch(path: &std::path::Path) {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    std::thread::sleep(Duration::from_millis(50));
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::UTIME_NOW,
        &TimeSpec::UTIME_NOW,
        UtimensatFlags::FollowSymlink,
    )
    .unwrap();
}

/// An interactive shell on a pty that is its controlling terminal (a new
/// session, TIOCSCTTY), driven as a person at a terminal would: job
/// control, ^C and ^Z go through the real terminal line discipline. The
/// terminal is 24 rows by 80 columns, `TERM=dumb` (a command that needs
/// more sets its own), the prompt `PROMPT> `. The shell has these
/// variables, not exported: `S`, the script (a call through us); `D`, the
/// same agent run directly by its interpreter (words to split); `PY`, the
/// python3 executable.
///
/// The shell is bash ([`shell`](Self::shell)), or dash
/// ([`dash`](Self::dash)), which unlike bash never puts back terminal
/// settings of its own when a job stops or dies of a signal: there,
/// whatever a call leaves on the terminal stays for the next command to
/// see.
pub struct Terminal {
    master: std::fs::File,
    shell: Child,
    seen: Vec<u8>,
    /// How much of `seen` earlier `expect`s consumed.
    mark: usize,
}

/// How long [`Terminal::expect`] waits: only so that a broken build fails
/// instead of hanging; nothing is expected to take nearly as long.
const TERMINAL_LIMIT: Duration = Duration::from_secs(10);

/// Which interactive shell a [`Terminal`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Dash,
}

impl Terminal {
    /// An interactive bash (which restores its own terminal settings
    /// after a job that stopped or died of a signal).
    pub fn shell(h: &Harness) -> Terminal {
        Self::spawn(h, Shell::Bash)
    }

    /// An interactive dash (job control, and no settings put back).
    pub fn dash(h: &Harness) -> Terminal {
        Self::spawn(h, Shell::Dash)
    }

    fn spawn(h: &Harness, shell: Shell) -> Terminal {
        let size = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).unwrap();
        let direct = h.direct_words();
        let direct: Vec<String> = direct
            .iter()
            .map(|w| {
                w.to_str()
                    .expect("a direct run's words in UTF-8")
                    .to_owned()
            })
            .collect();
        let variables = [
            ("S", h.script.to_str().expect("the script's path in UTF-8")),
            ("D", &direct.join(" ")),
            ("PY", python().to_str().expect("python3's path in UTF-8")),
        ]
        .map(|(name, value)| (name, value.to_owned()));
        let mut cmd = match shell {
            Shell::Bash => {
                let mut cmd = Command::new("bash");
                cmd.args(["--norc", "--noprofile", "-i"]);
                cmd
            }
            Shell::Dash => {
                let mut cmd = Command::new("dash");
                cmd.arg("-i");
                cmd
            }
        };
        cmd.env_clear()
            .envs(h.base_env())
            .env("PS1", "PROMPT> ")
            .env("TERM", "dumb")
            .env("HISTFILE", "/dev/null")
            .current_dir(h.dir());
        if shell == Shell::Bash {
            // Given in the environment, then unexported below.
            cmd.envs(variables.clone());
        }
        for fd in 0..3 {
            let slave = Stdio::from(pty.slave.try_clone().unwrap());
            match fd {
                0 => cmd.stdin(slave),
                1 => cmd.stdout(slave),
                _ => cmd.stderr(slave),
            };
        }
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(pty.slave);
        let mut t = Terminal {
            master: std::fs::File::from(pty.master),
            shell: child,
            seen: Vec::new(),
            mark: 0,
        };
        t.expect("PROMPT> ");
        match shell {
            // They came in the environment; calls need not see them.
            Shell::Bash => t.run("export -n S D PY"),
            // dash cannot unexport: set, never exported.
            Shell::Dash => {
                for (name, value) in &variables {
                    assert!(!value.contains('\''), "{name}: {value}");
                    t.run(&format!("{name}='{value}'"));
                }
            }
        }
        t
    }

    pub fn send(&mut self, bytes: &[u8]) {
        std::io::Write::write_all(&mut self.master, bytes).unwrap();
    }

    /// Waits until `needle` appears after what earlier calls consumed;
    /// consumes up to its end.
    pub fn expect(&mut self, needle: &str) {
        self.until(needle);
    }

    /// Waits until `needle` appears after what earlier calls consumed;
    /// consumes up to its end and returns what came before it.
    pub fn until(&mut self, needle: &str) -> String {
        use std::os::fd::AsFd;
        let deadline = Instant::now() + TERMINAL_LIMIT;
        loop {
            let fresh = &self.seen[self.mark..];
            if let Some(at) = fresh
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
            {
                let before = String::from_utf8_lossy(&fresh[..at]).into_owned();
                self.mark += at + needle.len();
                return before;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "terminal: no {needle:?} in {:?}",
                String::from_utf8_lossy(&self.seen[self.mark..])
            );
            let mut fds = [nix::poll::PollFd::new(
                self.master.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = left.as_millis().min(1000) as u16;
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                _ => {}
            }
            let mut buf = [0u8; 4096];
            match std::io::Read::read(&mut self.master, &mut buf) {
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "terminal closed while waiting for {needle:?} ({e}) in {:?}",
                    String::from_utf8_lossy(&self.seen[self.mark..])
                ),
            }
        }
    }

    /// Types a command line and waits for the shell's echo of it; the
    /// command then runs.
    pub fn start(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes());
        self.expect(&format!("{line}\r\n"));
    }

    /// Runs a shell command line and waits for the next prompt (after
    /// the line's echo: a prompt drawn again, as after a resize, is not
    /// the next one).
    pub fn run(&mut self, line: &str) {
        self.start(line);
        self.expect("PROMPT> ");
    }

    /// Runs a shell command line; returns what it printed (the terminal's
    /// `\r\n` and all) up to the next prompt.
    pub fn output(&mut self, line: &str) -> String {
        self.start(line);
        self.until("PROMPT> ")
    }

    /// The last command's status, as the shell's `$?` has it.
    pub fn status(&mut self) -> i32 {
        let text = self.output("echo $?");
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a status: {text:?}"))
    }

    /// The terminal's settings as `stty -a` in the shell prints them.
    pub fn stty(&mut self) -> String {
        self.output("stty -a")
    }

    /// The terminal's modes and control characters as the kernel has them
    /// now, read from the master side: unlike [`stty`](Self::stty) this
    /// works on a terminal left raw (no echo of a typed command, no
    /// `\r\n`), and a difference reads as flag names.
    pub fn modes(&self) -> String {
        // A pty master's TCGETS answers with its slave's settings.
        let t = nix::sys::termios::tcgetattr(&self.master).unwrap();
        format!(
            "input {:?}; output {:?}; control {:?}; local {:?}; characters {:?}",
            t.input_flags, t.output_flags, t.control_flags, t.local_flags, t.control_chars
        )
    }

    /// Everything the terminal showed, from the start.
    pub fn seen(&self) -> &[u8] {
        &self.seen
    }

    /// How far earlier `expect`s consumed: a position for [`since`](Self::since).
    pub fn position(&self) -> usize {
        self.mark
    }

    /// What the terminal showed from `position` up to what was consumed.
    pub fn since(&self, position: usize) -> String {
        String::from_utf8_lossy(&self.seen[position..self.mark]).into_owned()
    }

    /// Sets the terminal's window size, as a terminal emulator whose
    /// window changed does: the kernel sends SIGWINCH to its foreground
    /// process group.
    pub fn resize(&self, rows: u16, cols: u16) {
        use std::os::fd::AsRawFd;
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize that lives through the call.
        let done = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(done, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// The terminal's foreground process group.
    pub fn foreground(&self) -> u32 {
        nix::unistd::tcgetpgrp(&self.master).unwrap().as_raw() as u32
    }

    /// Whether the terminal echoes what is typed (its line discipline's
    /// ECHO: a call that has taken the terminal has it raw, without).
    pub fn echoes(&self) -> bool {
        // A pty master's TCGETS answers with its slave's settings.
        nix::sys::termios::tcgetattr(&self.master)
            .unwrap()
            .local_flags
            .contains(nix::sys::termios::LocalFlags::ECHO)
    }

    /// The shell's pid (its process group's id, and its session's).
    pub fn shell_pid(&self) -> u32 {
        self.shell.id()
    }

    /// Waits until a job of the shell's has the terminal; returns its
    /// process group's id (a one-process job's: that process's pid).
    pub fn job(&self) -> u32 {
        let shell = self.shell_pid();
        let mut job = shell;
        wait_until("a job in the foreground", TERMINAL_LIMIT, || {
            job = self.foreground();
            job != shell
        })
        .unwrap();
        job
    }

    pub fn exit(mut self) {
        self.send(b"exit\n");
        self.shell.wait().unwrap();
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // A failed test: the shell and its jobs must not outlive it.
        if self.shell.try_wait().ok().flatten().is_none() {
            // SAFETY: signalling our own shell's session by its group.
            unsafe { libc::kill(-(self.shell.id() as i32), libc::SIGKILL) };
            let _ = self.shell.wait();
        }
    }
}

/// Reads a whole greeting from `socket` (magic, length, xdata), as raw
/// bytes: no decoder of the crate is trusted with what the tests pin.
pub fn raw_greeting(socket: &Path) -> Vec<u8> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    // Through the directory's fd: a socket in a private /run (chiark's
    // client) lies deeper than a socket address's 108 bytes reach.
    let dir = std::fs::File::open(socket.parent().unwrap()).unwrap();
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(socket.file_name().unwrap());
    let mut conn = std::os::unix::net::UnixStream::connect(short).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = vec![0u8; 8];
    conn.read_exact(&mut greeting).unwrap();
    let len = u32::from_be_bytes(greeting[4..8].try_into().unwrap());
    let mut xdata = vec![0u8; len as usize];
    conn.read_exact(&mut xdata).unwrap();
    greeting.extend_from_slice(&xdata);
    greeting
}

/// Does process `pid` hold an inotify instance (a server watching files)?
/// How many inotify instances `pid` holds (0 if it has gone).
pub fn inotify_instances(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|t| t.as_os_str() == "anon_inode:inotify")
                .count()
        })
        .unwrap_or(0)
}

pub fn holds_inotify(pid: &str) -> bool {
    std::fs::read_dir(format!("/proc/{}/fd", pid.trim()))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|t| t.as_os_str() == "anon_inode:inotify")
}

/// Is `pid` running (present and not a zombie)?
pub fn alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|(state, _)| state != 'Z')
}

/// Has `pid` been reaped (no trace left, not even a zombie)?
pub fn reaped(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits for a condition that the system reaches by itself (a process
/// exiting, a file appearing). Not a timing assertion: the limit only
/// stops a broken build from hanging.
pub fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The second user the cross-user tests act as (made on first use; the
/// tests need root, as CI has). Returns its uid and gid.
pub fn other_user() -> (u32, u32) {
    test_user("pfi-other")
}

/// A system user of the tests' own, `name` (made on first use): a budget
/// of processes and inotify instances no other test shares. Returns its
/// uid and gid.
pub fn test_user(name: &str) -> (u32, u32) {
    let lookup = || {
        let id = |flag: &str| {
            let out = Command::new("id").args([flag, name]).output().ok()?;
            String::from_utf8(out.stdout)
                .ok()?
                .trim()
                .parse::<u32>()
                .ok()
        };
        Some((id("-u")?, id("-g")?))
    };
    // Test processes run in parallel: useradd may lose a race for
    // /etc/passwd's lock, or find the user made meanwhile.
    for _ in 0..100 {
        if let Some(ids) = lookup() {
            return ids;
        }
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("cannot make user {name} (these tests need root)");
}

/// A process of `uid` holding that user's inotify instances, all but
/// `spare` of them (`fs.inotify.max_user_instances`, less those its other
/// processes hold): as a user's editors, file managers and desktop may.
/// Killed when dropped.
pub struct InotifyHolder {
    child: Child,
    /// How many it holds.
    pub held: usize,
}

impl InotifyHolder {
    pub fn new(uid: u32, gid: u32, spare: usize) -> InotifyHolder {
        let program = format!(
            r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while True:
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        break
    fds.append(fd)
spare = min({spare}, len(fds))
for fd in fds[len(fds) - spare:]:
    os.close(fd)
print(len(fds) - spare, flush=True)
sys.stdin.read()
"#
        );
        let mut child = as_user(uid, gid, "/usr/bin/python3")
            .args(["-c", &program])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let held = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("holder said {line:?}"));
        InotifyHolder { child, held }
    }
}

impl Drop for InotifyHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program`, to be run as `uid`/`gid` with no supplementary groups.
pub fn as_user(uid: u32, gid: u32, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--"])
        .arg(program);
    cmd
}

/// A private directory (mode 0700) owned by `uid`/`gid`, under /tmp so
/// that its user can reach it.
pub fn dir_owned_by(uid: u32, gid: u32) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pfi-user-")
        .tempdir_in("/tmp")
        .unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    set_mode(dir.path(), 0o700);
    dir
}

pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A process that holds namespaces of its own (`unshare FLAGS sleep`), for
/// calls to run inside ([`Call::inside`]); killed when dropped.
pub struct NamespaceHolder {
    child: Child,
    /// The process in those namespaces (with `--fork`, unshare's child).
    pub pid: u32,
}

impl NamespaceHolder {
    pub fn new(flags: &[&str]) -> Self {
        Self::after(flags, &[])
    }

    /// Like [`new`](Self::new), but the holder first runs `setup` (a
    /// command and its arguments) in its namespaces, and holds them only
    /// if that succeeds.
    pub fn after(flags: &[&str], setup: &[&str]) -> Self {
        let mut cmd = Command::new("unshare");
        cmd.args(flags).arg("--");
        if setup.is_empty() {
            cmd.args(["sleep", "3600"]);
        } else {
            cmd.args(["sh", "-c", "\"$@\" && exec sleep 3600", "sh"])
                .args(setup);
        }
        let child = cmd.stdin(Stdio::null()).spawn().unwrap();
        let outer = child.id();
        let mut pid = 0;
        wait_until("the namespaces' holder", Duration::from_secs(10), || {
            let inner = if flags.contains(&"--fork") {
                std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
                    .ok()
                    .and_then(|c| c.split_whitespace().next()?.parse().ok())
            } else {
                Some(outer)
            };
            // Its namespaces are made once it runs sleep.
            let Some(inner) = inner else { return false };
            pid = inner;
            std::fs::read(format!("/proc/{inner}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
        })
        .unwrap();
        NamespaceHolder { child, pid }
    }
}

impl Drop for NamespaceHolder {
    fn drop(&mut self) {
        // SAFETY: killing our own helper processes.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cgroup (v2) of the test's own, below the test's, for calls to run in
/// ([`Call::in_cgroup`]); removed when dropped, once empty.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        // Fields: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE ...
        let mount = mountinfo
            .lines()
            .find(|l| {
                l.split(" - ")
                    .nth(1)
                    .is_some_and(|t| t.starts_with("cgroup2 "))
            })
            .and_then(|l| l.split(' ').nth(4))
            .expect("a cgroup2 file system is mounted");
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let ours = cgroups
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a unified cgroup line");
        let path = Path::new(mount)
            .join(ours.trim_start_matches('/'))
            .join(format!("pfi-test-{}-{name}", std::process::id()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        TestCgroup { path }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = wait_until("the test cgroup to empty", Duration::from_secs(10), || {
            std::fs::remove_dir(&self.path).is_ok()
        });
    }
}

/// Whether the test runs as root; if not, says it is skipped (CI runs as
/// root), naming what root is needed for.
pub fn running_as_root(for_what: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root ({for_what})");
    }
    root
}

/// A side's list of its interpreter's start-up variables (`listed`)
/// against the interpreter's documentation of them (`documented`, from
/// `source`): each documented one is listed, or explained in
/// `not_at_start`, never both.
#[track_caller]
pub fn assert_interpreter_variables_cover<D: AsRef<str>>(
    documented: &[D],
    listed: &[&str],
    not_at_start: &[(&str, &str)],
    source: &str,
) {
    assert!(documented.len() >= 20, "too few read from {source}");
    for name in documented.iter().map(AsRef::as_ref) {
        assert!(
            listed.contains(&name) || not_at_start.iter().any(|(n, _)| *n == name),
            "{name} ({source}) is neither in INTERPRETER_VARIABLES nor explained"
        );
    }
    for (name, _) in not_at_start {
        assert!(
            !listed.contains(name),
            "{name} is listed and explained away"
        );
    }
}

/// How much of `pid`'s anonymous memory is its own: Private_Dirty and
/// Anonymous (kB) in /proc/PID/smaps_rollup. A spare fresh from its
/// monitor shares nearly all of it with the server (8-13% its own, for
/// the scripts here); once it has copied its heap in advance, over 90%.
pub fn own_of_anonymous_kb(pid: u32) -> (u64, u64) {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {name} in {path}:\n{text}"))
    };
    (field("Private_Dirty:"), field("Anonymous:"))
}

/// The live children of `parent` (its only thread's, the monitor being
/// single-threaded), but those in `except`.
pub fn children_of(parent: u32, except: &[u32]) -> Vec<u32> {
    let listed = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .map(|text| {
            text.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        // A kernel without CONFIG_PROC_CHILDREN: every process's parent.
        .unwrap_or_else(|_| {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                .filter(|&pid| proc_state(pid).is_some_and(|(_, ppid)| ppid == parent))
                .collect()
        });
    listed
        .into_iter()
        .filter(|pid| !except.contains(pid) && alive(pid.to_owned()))
        .collect()
}
/// The one idle spare of the monitor `monitor` (spare_handlers=1), once
/// forked, the call `executor` being its other child.
pub fn spare_of(monitor: u32, executor: u32) -> u32 {
    let mut spare = None;
    wait_until(
        "the monitor to fork the next spare",
        Duration::from_secs(10),
        || {
            spare = children_of(monitor, &[executor]).first().copied();
            spare.is_some()
        },
    )
    .unwrap();
    spare.unwrap()
}
/// (monitor, executor) from a call's output: `os.getppid() os.getpid()`.
pub fn monitor_and_executor(line: &str) -> (u32, u32) {
    let pids: Vec<u32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap_or_else(|_| panic!("not pids: {line:?}")))
        .collect();
    assert_eq!(pids.len(), 2, "{line:?}");
    (pids[0], pids[1])
}

/// (monitor, its idle spare) after a call whose script printed
/// `os.getppid() os.getpid()` (the monitor and the call's executor)
/// and succeeded.
pub fn monitor_and_spare(out: &Output) -> (u32, u32) {
    assert_success(out);
    let (monitor, executor) = monitor_and_executor(&stdout_str(out));
    (monitor, spare_of(monitor, executor))
}
