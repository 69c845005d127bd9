//! `--run PROGRAM [ARG ...]`: an existing Perl, Python or Ruby program behind a
//! server, unchanged. PROGRAM's own `#!` line names its interpreter; the
//! client runs that interpreter with its language's runner, which
//! preloads what the program uses, completes the initialisation and runs
//! the program's file in each call:
//!
//! ```text
//! #!/usr/bin/python3 -u       ->  python3 -u -m prefork_interp PROGRAM ARG...
//! #!/usr/bin/env perl -w      ->  perl -w -MProc::Prefork::Interp::Run PROGRAM ARG...
//! #!/usr/bin/ruby3.1           ->  ruby3.1 -rprefork_interp/run PROGRAM ARG...
//! ```
//!
//! One server per program serves every directory (as `--caller-dir`).

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::exit::Failure;

/// The kernel reads at most this much of a `#!` line (BINPRM_BUF_SIZE).
const SHEBANG_MAX: usize = 256;

/// A language we have a runner for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Language {
    Perl,
    Python,
    Ruby,
}

impl Language {
    /// By the interpreter's name (`perl`, `python3.11`, a path to one).
    pub(super) fn of(interpreter: &OsStr) -> Option<Language> {
        let name = Path::new(interpreter).file_name()?.as_bytes();
        let is = |language: &[u8]| {
            name.strip_prefix(language)
                .is_some_and(|version| version.iter().all(|b| b.is_ascii_digit() || *b == b'.'))
        };
        if is(b"python") {
            Some(Language::Python)
        } else if is(b"perl") {
            Some(Language::Perl)
        } else if is(b"ruby") {
            Some(Language::Ruby)
        } else {
            None
        }
    }

    /// The arguments that go between the interpreter's own and PROGRAM.
    pub(super) fn runner_arguments(self) -> &'static [&'static str] {
        match self {
            Language::Python => &["-m", "prefork_interp"],
            Language::Perl => &["-MProc::Prefork::Interp::Run"],
            Language::Ruby => &["-rprefork_interp/run"],
        }
    }
}

/// Perl's argument asking it to start our module's tracking of the
/// environment as it starts (before the script's BEGIN blocks and the
/// `use` lines above ours), where our module is in perl's own @INC; a
/// no-op otherwise (see Proc::Prefork::Interp::InitEnv's `start`).
const PERL_EARLY_TRACKING: &str = "-M5;BEGIN{local($!,$@);eval{require \
     Proc::Prefork::Interp::InitEnv;Proc::Prefork::Interp::InitEnv->start}}";

/// Ruby's counterpart of [`PERL_EARLY_TRACKING`]: `-r` of a missing
/// library is fatal, so Ruby is given this file, beside our run directory,
/// which loads the side's tracking where Ruby finds it, and else nothing.
const RUBY_EARLY_TRACKING: &str = "# Written by prefork-interp, which starts a Ruby server \
with -r of this file: the environment its initialisation reads is\n\
# tracked from the interpreter's start, where prefork_interp is installed.\n\
begin\n  require \"prefork_interp/init_env\"\nrescue LoadError\n  nil\nend\n";

/// Its name, in the run directory's parent: the run directory holds the
/// servers' sockets and locks only, which `--list` and the eviction of
/// old servers read. (That parent is as private as the run directory:
/// XDG_RUNTIME_DIR, /run/user/UID or ~/.prefork-interp, each checked
/// ours and closed to others.)
const RUBY_EARLY_FILE: &str = "prefork-interp-ruby-early.rb";

/// The arguments that go after a new server's interpreter's own, before
/// the script, so that the environment its initialisation reads is
/// tracked from the interpreter's start. Ruby's is a file beside `base`,
/// the run directory, written here if it is not there as it should be; if
/// that fails, nothing (the tracking starts at `require "prefork_interp"`).
/// Python needs none: our package's .pth file does this in a setup run.
pub(super) fn early_tracking_arguments(interpreter: &OsStr, base: &Path) -> Vec<OsString> {
    match Language::of(interpreter) {
        Some(Language::Perl) => vec![PERL_EARLY_TRACKING.into()],
        Some(Language::Ruby) => {
            let file = base.parent().unwrap_or(base).join(RUBY_EARLY_FILE);
            let written = std::fs::read(&file)
                .is_ok_and(|text| text == RUBY_EARLY_TRACKING.as_bytes())
                || write_atomically(&file, RUBY_EARLY_TRACKING.as_bytes()).is_ok();
            match written {
                true => {
                    let mut argument = OsString::from("-r");
                    argument.push(&file);
                    vec![argument]
                }
                false => Vec::new(),
            }
        }
        Some(Language::Python) | None => Vec::new(),
    }
}

/// `bytes` as `path`'s whole content, never half written (another client
/// may be starting a server, and reading it, now).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })
}

/// The runner's arguments for this interpreter, if it has one.
fn runner_arguments(interpreter: &OsStr) -> Option<&'static [&'static str]> {
    Language::of(interpreter).map(Language::runner_arguments)
}

/// The interpreter and its arguments that a `#!` line names, as the kernel
/// (and `env`, `env -S`) would run them. `None`: not a `#!` line.
pub(crate) fn parse_shebang(first_line: &[u8]) -> Option<Vec<OsString>> {
    let rest = first_line.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next().unwrap_or(rest);
    let words = |text: &[u8]| -> Vec<OsString> {
        text.split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .map(|w| OsString::from_vec(w.to_vec()))
            .collect()
    };
    let mut all = words(line);
    if all.is_empty() {
        return None;
    }
    // `#!/usr/bin/env [-S] NAME ARGS`: NAME, looked up in PATH.
    if Path::new(&all[0]).file_name() == Some(OsStr::new("env")) {
        all.remove(0);
        if all.first().is_some_and(|w| w == "-S") {
            all.remove(0);
        }
    }
    (!all.is_empty()).then_some(all)
}

/// Finds PROGRAM: a path as given, or a bare name in PATH (as a shell
/// would for an alias).
fn locate(program: &OsStr) -> Result<PathBuf, Failure> {
    find_in_path(program)
        .ok_or_else(|| Failure::new(format!("--run: {}: not found in PATH", program.display())))
}

/// A path as given; a bare name, the first file of that name in PATH (as
/// a shell, or `env`, finds a command).
pub(super) fn find_in_path(name: &OsStr) -> Option<PathBuf> {
    if name.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The interpreter command (its arguments and the runner's) and the
/// program's path, for `--run PROGRAM`.
pub(crate) fn runner_command(program: &OsStr) -> Result<(Vec<OsString>, OsString), Failure> {
    let path = locate(program)?;
    let shown = path.display();
    let mut file =
        std::fs::File::open(&path).map_err(|e| Failure::new(format!("--run: {shown}: {e}")))?;
    let metadata = file
        .metadata()
        .map_err(|e| Failure::new(format!("--run: {shown}: {e}")))?;
    if !metadata.is_file() {
        return Err(Failure::new(format!("--run: {shown}: not a regular file")));
    }
    if metadata.permissions().mode() & 0o111 == 0 {
        return Err(Failure::new(format!(
            "--run: {shown}: not executable (a direct run would be refused too)"
        )));
    }
    let mut head = Vec::with_capacity(SHEBANG_MAX);
    file.by_ref()
        .take(SHEBANG_MAX as u64)
        .read_to_end(&mut head)
        .map_err(|e| Failure::new(format!("--run: {shown}: {e}")))?;
    let Some(mut interpreter) = parse_shebang(&head) else {
        return Err(Failure::new(format!(
            "--run: {shown} has no #! line naming its interpreter"
        )));
    };
    let Some(runner) = runner_arguments(&interpreter[0]) else {
        return Err(Failure::new(format!(
            "--run: {shown}: its #! line names {}, which has no runner (Perl, Python and Ruby programs only)",
            interpreter[0].display()
        )));
    };
    interpreter.extend(runner.iter().map(OsString::from));
    Ok((interpreter, path.into_os_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn shebang_forms() {
        assert_eq!(
            parse_shebang(b"#!/usr/bin/python3\nimport x"),
            Some(os(&["/usr/bin/python3"]))
        );
        assert_eq!(
            parse_shebang(b"#! /usr/bin/perl -w\n"),
            Some(os(&["/usr/bin/perl", "-w"]))
        );
        assert_eq!(
            parse_shebang(b"#!/usr/bin/env python3\n"),
            Some(os(&["python3"]))
        );
        assert_eq!(
            parse_shebang(b"#!/usr/bin/env -S perl -T -w\n"),
            Some(os(&["perl", "-T", "-w"]))
        );
        assert_eq!(parse_shebang(b"import sys\n"), None);
        assert_eq!(parse_shebang(b"#!\n"), None);
        assert_eq!(parse_shebang(b"#!/usr/bin/env\n"), None);
    }

    #[test]
    fn runners_by_interpreter_name() {
        for python in ["python3", "/usr/bin/python3.11", "python"] {
            assert_eq!(
                runner_arguments(OsStr::new(python)),
                Some(&["-m", "prefork_interp"][..])
            );
        }
        for perl in ["perl", "/usr/bin/perl5.36.0"] {
            assert_eq!(
                runner_arguments(OsStr::new(perl)),
                Some(&["-MProc::Prefork::Interp::Run"][..])
            );
        }
        for ruby in ["ruby", "/usr/bin/ruby3.1"] {
            assert_eq!(
                runner_arguments(OsStr::new(ruby)),
                Some(&["-rprefork_interp/run"][..])
            );
        }
        for other in ["/bin/sh", "rubocop", "python3-config", "perldoc"] {
            assert_eq!(runner_arguments(OsStr::new(other)), None, "{other}");
        }
    }
}
