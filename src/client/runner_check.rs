//! `--run`'s check, before it starts a server, that the program's
//! interpreter finds our runner, and the line it prints when it does not.
//!
//! Whatever installed the client (a wheel, `cargo install`, the .deb,
//! `make install`), a missing runner is missing for one interpreter, the
//! one the program's `#!` line names: so the line names the program, the
//! runner and that interpreter, and ends with the one command, in that
//! interpreter's own ecosystem and aimed at exactly it, that installs the
//! published package:
//!
//! ```text
//! python:  INTERP -m pip install prefork-interp      (PyPI)
//!          pipx inject VENV prefork-interp            (a pipx venv's python)
//! perl:    INTERP -S cpanm Proc::Prefork::Interp      (CPAN; IO::FDPass alike)
//! ruby:    INTERP -S gem install prefork_interp       (RubyGems)
//! ```
//!
//! with the options the installer needs there to put it where that
//! interpreter looks, which the probe reports: pip refuses an
//! "externally managed" Python (PEP 668: Debian's /usr/bin/python3) unless
//! told, and RubyGems fails where the gem directory is not writable.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::exit::Failure;
use super::run::{Language, find_in_path};

/// The probe's exit status when the runner is missing (0: it is there).
const RUNNER_MISSING: i32 = 3;
/// Perl's probe's when the runner is there but IO::FDPass, which it
/// needs, is not (the server would fail in its setup run, which would
/// read as the program failing).
const FDPASS_MISSING: i32 = 4;

/// The published packages' names.
const PYPI_PACKAGE: &str = "prefork-interp";
const CPAN_MODULE: &str = "Proc::Prefork::Interp";
const GEM: &str = "prefork_interp";

/// Checks, for a new server of `--run`, that the interpreter finds our
/// runner (`interpreter` ends with the runner's arguments): without it
/// the interpreter's own "Can't locate ..." or "No module named ..."
/// would read as the program failing. Asks the interpreter with its own
/// arguments (`-I`, `-T`, `-E` change where it looks) and environment,
/// loading nothing: a few milliseconds, on the cold path only. An
/// interpreter that cannot be run is left to the setup run to report.
pub(crate) fn check_runner(
    interpreter: &[OsString],
    program: Option<&OsStr>,
) -> Result<(), Failure> {
    let Some(language) = Language::of(&interpreter[0]) else {
        return Ok(());
    };
    // The interpreter's own words, without the runner's (the last ones).
    let own = &interpreter[1..interpreter.len() - language.runner_arguments().len()];
    let Ok(probed) = Command::new(&interpreter[0])
        .args(own)
        .args(probe(language))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return Ok(());
    };
    let interpreter = interpreter[0].as_os_str();
    let (needs, command) = match (language, probed.status.code()) {
        (_, Some(RUNNER_MISSING)) => (
            format!("prefork-interp's {}", runner_name(language)),
            install_runner(language, interpreter, &probed.stdout, &|name| {
                std::env::var_os(name)
            }),
        ),
        (Language::Perl, Some(FDPASS_MISSING)) => (
            format!(
                "IO::FDPass{} for prefork-interp's Perl runner",
                if debians_perl(interpreter) {
                    " (Debian's libio-fdpass-perl)"
                } else {
                    ""
                }
            ),
            cpanm(interpreter, "IO::FDPass"),
        ),
        _ => return Ok(()),
    };
    Err(Failure::new(format!(
        "--run: {} needs {needs}, not installed for {}: install it with: {command}",
        program.unwrap_or(interpreter).display(),
        interpreter.display()
    )))
}

/// The runner as the line names it.
fn runner_name(language: Language) -> &'static str {
    match language {
        Language::Python => "Python runner (the prefork_interp package)",
        Language::Perl => "Perl runner (Proc::Prefork::Interp::Run)",
        Language::Ruby => "Ruby runner (prefork_interp/run)",
    }
}

/// The arguments that ask the interpreter whether it finds the runner:
/// exit 0 if so, [`RUNNER_MISSING`] with what the install command
/// depends on (on stdout) if not.
fn probe(language: Language) -> [String; 2] {
    match language {
        // If missing: "MANAGED USER-SITE\nPREFIX": whether pip would
        // refuse this Python as externally managed (pip's own test: the
        // marker file in the standard library, outside a venv), whether
        // its user site is on (`-s`, `-I` turn it off), and its prefix (a
        // pipx venv's is that venv).
        Language::Python => [
            "-c".to_owned(),
            format!(
                "import importlib.util, os, site, sys, sysconfig\n\
                 if importlib.util.find_spec('prefork_interp'): sys.exit(0)\n\
                 venv = sys.prefix != sys.base_prefix or hasattr(sys, 'real_prefix')\n\
                 marker = os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')\n\
                 managed = not venv and os.path.isfile(marker)\n\
                 sys.stdout.buffer.write(b'%d %d\\n' % (managed, bool(site.ENABLE_USER_SITE))\n\
                     + os.fsencode(sys.prefix))\n\
                 sys.exit({RUNNER_MISSING})"
            ),
        ],
        // Files on @INC, as `require` looks (a hook is no directory).
        Language::Perl => [
            "-e".to_owned(),
            format!(
                "my $on = sub {{ my $f = shift; grep {{ !ref && -f \"$_/$f\" }} @INC }}; \
                 exit(!$on->('Proc/Prefork/Interp/Run.pm') ? {RUNNER_MISSING} \
                 : !$on->('IO/FDPass.pm') ? {FDPASS_MISSING} : 0)"
            ),
        ],
        // Where `require` looks: the load path, then (unless the
        // interpreter's own words disable them) the installed gems. If
        // missing: whether `gem install` can write where it would install
        // (the gem directory, or what it would be made in).
        Language::Ruby => [
            "-e".to_owned(),
            format!(
                "f = 'prefork_interp/run.rb'\n\
                 exit 0 if $LOAD_PATH.any? {{ |d| File.file?(File.join(d, f)) }} || \
                 (defined?(Gem) && !Gem.find_files(f).empty?)\n\
                 if defined?(Gem)\n  d = Gem.dir\n  d = File.dirname(d) until File.exist?(d)\n  \
                 print(File.writable?(d) ? 'writable' : 'not writable')\nend\n\
                 exit {RUNNER_MISSING}"
            ),
        ],
    }
}

/// The command that installs the runner for `interpreter`, from what its
/// probe said (`facts`) and the client's environment (`env`).
fn install_runner(
    language: Language,
    interpreter: &OsStr,
    facts: &[u8],
    env: &dyn Fn(&str) -> Option<OsString>,
) -> String {
    match language {
        Language::Python => pip(interpreter, facts, env),
        Language::Perl => cpanm(interpreter, CPAN_MODULE),
        // Where the gem directory is not writable (Debian's ruby, not
        // root) `gem install` fails; the user's gem directory is on
        // RubyGems' default path.
        Language::Ruby => format!(
            "{} -S gem install{} {GEM}",
            shell_word(interpreter),
            if facts == b"not writable" {
                " --user-install"
            } else {
                ""
            }
        ),
    }
}

/// The pip (or pipx) command for a Python whose probe said `facts`.
fn pip(interpreter: &OsStr, facts: &[u8], env: &dyn Fn(&str) -> Option<OsString>) -> String {
    let (flags, prefix) = match facts.iter().position(|&b| b == b'\n') {
        Some(at) => (
            &facts[..at],
            PathBuf::from(OsString::from_vec(facts[at + 1..].to_vec())),
        ),
        None => (facts, PathBuf::new()),
    };
    // A pipx venv is pipx's to change (`pipx reinstall` keeps what was
    // injected, and nothing that pip put there). pipx names it by its
    // directory, in PIPX_HOME/venvs; a venv elsewhere than where pipx
    // will look is named with its PIPX_HOME.
    if prefix.join("pipx_metadata.json").is_file()
        && let Some(venvs) = prefix.parent()
        && venvs.file_name() == Some(OsStr::new("venvs"))
        && let (Some(name), Some(home)) = (prefix.file_name(), venvs.parent())
    {
        let told = match pipx_looks_in(env).iter().any(|looked| looked == home) {
            true => String::new(),
            false => format!("PIPX_HOME={} ", shell_word(home.as_os_str())),
        };
        return format!("{told}pipx inject {} {PYPI_PACKAGE}", shell_word(name));
    }
    // An externally managed Python: pip installs only if told to, and
    // then into the user's site (our package only: it depends on
    // nothing), where this Python looks, or, with no user site, where it
    // would install as root.
    let options = match flags {
        b"1 1" => " --user --break-system-packages",
        b"1 0" => " --break-system-packages",
        _ => "",
    };
    format!(
        "{} -m pip install{options} {PYPI_PACKAGE}",
        shell_word(interpreter)
    )
}

/// Where pipx keeps its venvs: PIPX_HOME; unset, `~/.local/pipx` (its
/// first default, still used where it exists) or the later
/// `$XDG_DATA_HOME/pipx` (`~/.local/share/pipx`).
fn pipx_looks_in(env: &dyn Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
    let set = |name| env(name).filter(|value| !value.is_empty());
    if let Some(home) = set("PIPX_HOME") {
        return vec![PathBuf::from(home)];
    }
    let Some(user) = set("HOME").map(PathBuf::from) else {
        return Vec::new();
    };
    let data = set("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|data| data.is_absolute())
        .unwrap_or_else(|| user.join(".local/share"));
    vec![user.join(".local/pipx"), data.join("pipx")]
}

/// `perl -S cpanm MODULE`: the cpanm in PATH, run by exactly this perl.
fn cpanm(interpreter: &OsStr, module: &str) -> String {
    format!("{} -S cpanm {module}", shell_word(interpreter))
}

/// Whether `interpreter` is Debian's perl, for which Debian packages
/// IO::FDPass.
fn debians_perl(interpreter: &OsStr) -> bool {
    let canonical = |path: &Path| std::fs::canonicalize(path).ok();
    Path::new("/etc/debian_version").exists()
        && find_in_path(interpreter)
            .and_then(|found| canonical(&found))
            .is_some_and(|found| Some(found) == canonical(Path::new("/usr/bin/perl")))
}

/// `word` as one word of a POSIX shell's command line, quoted only where
/// it must be, so that the printed command can be pasted. (Shown as
/// UTF-8: a name that is not has its bad bytes replaced, as in the rest
/// of the line.)
fn shell_word(word: &OsStr) -> String {
    let text = word.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:,+@".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn os(text: &str) -> &OsStr {
        OsStr::new(text)
    }

    #[test]
    fn shell_words_quoted_only_where_needed() {
        assert_eq!(shell_word(os("/usr/bin/perl")), "/usr/bin/perl");
        assert_eq!(shell_word(os("python3.11")), "python3.11");
        assert_eq!(shell_word(os("/opt/my perl/perl")), "'/opt/my perl/perl'");
        assert_eq!(shell_word(os("/opt/it's/ruby")), r"'/opt/it'\''s/ruby'");
        assert_eq!(shell_word(os("/opt/$HOME/perl")), "'/opt/$HOME/perl'");
        assert_eq!(shell_word(os("/opt/a=b/perl")), "'/opt/a=b/perl'");
        assert_eq!(shell_word(os("~/perl")), "'~/perl'");
        assert_eq!(shell_word(os("")), "''");
    }

    #[test]
    fn perl_and_ruby_commands() {
        assert_eq!(
            install_runner(Language::Perl, os("/usr/bin/perl"), b"", &no_env),
            "/usr/bin/perl -S cpanm Proc::Prefork::Interp"
        );
        assert_eq!(
            cpanm(os("/opt/perl 5/bin/perl"), "IO::FDPass"),
            "'/opt/perl 5/bin/perl' -S cpanm IO::FDPass"
        );
        assert_eq!(
            install_runner(Language::Ruby, os("ruby3.1"), b"writable", &no_env),
            "ruby3.1 -S gem install prefork_interp"
        );
        assert_eq!(
            install_runner(
                Language::Ruby,
                os("/usr/bin/ruby"),
                b"not writable",
                &no_env
            ),
            "/usr/bin/ruby -S gem install --user-install prefork_interp"
        );
        // No RubyGems (--disable-gems): gem cannot help, but says so itself.
        assert_eq!(
            install_runner(Language::Ruby, os("ruby"), b"", &no_env),
            "ruby -S gem install prefork_interp"
        );
    }

    #[test]
    fn pip_commands_by_what_the_probe_said() {
        let pip = |facts: &[u8]| install_runner(Language::Python, os("python3"), facts, &no_env);
        assert_eq!(
            pip(b"0 1\n/usr/local"),
            "python3 -m pip install prefork-interp"
        );
        assert_eq!(
            pip(b"1 1\n/usr"),
            "python3 -m pip install --user --break-system-packages prefork-interp"
        );
        assert_eq!(
            pip(b"1 0\n/usr"),
            "python3 -m pip install --break-system-packages prefork-interp"
        );
        // Nothing said (a probe that printed something else): plain pip.
        assert_eq!(pip(b""), "python3 -m pip install prefork-interp");
    }

    #[test]
    fn pipx_venvs_get_pipx_inject() {
        let world = tempfile::tempdir().unwrap();
        let home = world.path().join("home");
        let venv = |pipx_home: &Path, name: &str| {
            let prefix = pipx_home.join("venvs").join(name);
            std::fs::create_dir_all(&prefix).unwrap();
            std::fs::write(prefix.join("pipx_metadata.json"), "{}").unwrap();
            let mut facts = b"0 1\n".to_vec();
            facts.extend_from_slice(prefix.as_os_str().as_encoded_bytes());
            facts
        };
        let env_of = |vars: Vec<(&'static str, PathBuf)>| {
            move |name: &str| {
                vars.iter()
                    .find(|(var, _)| *var == name)
                    .map(|(_, value)| value.clone().into_os_string())
            }
        };
        let pip = |facts: &[u8], env: &dyn Fn(&str) -> Option<OsString>| {
            install_runner(Language::Python, os("/x/bin/python"), facts, env)
        };
        let home_only = env_of(vec![("HOME", home.clone())]);
        // Where pipx looks by default, old and new: by name alone.
        for default in [".local/pipx", ".local/share/pipx"] {
            assert_eq!(
                pip(&venv(&home.join(default), "tool"), &home_only),
                "pipx inject tool prefork-interp",
                "{default}"
            );
        }
        let xdg = env_of(vec![
            ("HOME", home.clone()),
            ("XDG_DATA_HOME", world.path().join("data")),
        ]);
        assert_eq!(
            pip(&venv(&world.path().join("data/pipx"), "tool"), &xdg),
            "pipx inject tool prefork-interp"
        );
        // Elsewhere: with its PIPX_HOME, unless that is PIPX_HOME now.
        let elsewhere = world.path().join("my pipx");
        let facts = venv(&elsewhere, "tool@2");
        assert_eq!(
            pip(&facts, &home_only),
            format!(
                "PIPX_HOME='{}' pipx inject tool@2 prefork-interp",
                elsewhere.display()
            )
        );
        let set = env_of(vec![("HOME", home.clone()), ("PIPX_HOME", elsewhere)]);
        assert_eq!(pip(&facts, &set), "pipx inject tool@2 prefork-interp");
        // PIPX_HOME set elsewhere: a default venv is no longer found by name.
        let other = env_of(vec![("HOME", home.clone()), ("PIPX_HOME", "/x".into())]);
        assert_eq!(
            pip(&venv(&home.join(".local/pipx"), "tool"), &other),
            format!(
                "PIPX_HOME={}/.local/pipx pipx inject tool prefork-interp",
                home.display()
            )
        );
        // A venv that is not pipx's: its own pip.
        let plain = world.path().join("venv");
        std::fs::create_dir_all(&plain).unwrap();
        let mut facts = b"0 1\n".to_vec();
        facts.extend_from_slice(plain.as_os_str().as_encoded_bytes());
        assert_eq!(
            pip(&facts, &home_only),
            "/x/bin/python -m pip install prefork-interp"
        );
    }
}
