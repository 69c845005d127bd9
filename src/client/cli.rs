//! The client's command line.
//!
//! Linux hands everything after the `#!` program to it as ONE argument,
//! so options reach us in a combined form:
//!
//! ```text
//! prefork-interp [OPTION ...] INTERP [SCRIPT [ARG ...]]
//! prefork-interp OPTION,...,INTERP[,INTERP-ARG...] SCRIPT [ARG ...]
//! prefork-interp 'OPTION ... INTERP [INTERP-ARG ...]' SCRIPT [ARG ...]
//! ```
//!
//! The first argument is split (on spaces if it has any, else on commas)
//! when it starts with `-` and holds a separator. Options are read up to
//! the first word that is not one; that word is the interpreter and the
//! rest of the split argument are the interpreter's own arguments, so
//! `-U,perl,-w` runs `perl -w SCRIPT ARG...`.
//!
//! `prefork-interp --run PROGRAM [ARG ...]` runs an existing Perl or
//! Python program through its language's runner (see `run`).
//!
//! `prefork-interp --completions SHELL` prints a completion script made
//! from this same definition (see `completions`).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use clap::error::{ContextKind, ContextValue};
use clap::{Arg, ArgAction, Command, ValueHint};

use super::exit::Failure;
use super::run;
use super::rundir::IdentityItem;

/// What the client is asked to do with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Use the running server, creating one if there is none.
    Normal,
    /// `-f`: start a new server even if one runs; the old one quits.
    Fresh,
    /// `--kill`: tear down any server for this identity; run nothing.
    Kill,
    /// `--list`: show this user's servers (with `--json`, as JSON); run
    /// nothing.
    List { json: bool },
}

/// A parsed command line that asks for a call (or a kill).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientArgs {
    pub(crate) mode: Mode,
    /// `-E` and `-G` options in command-line order.
    pub(crate) identity_items: Vec<IdentityItem>,
    /// `-g IDENT`.
    pub(crate) given_identity: Option<OsString>,
    /// `--caller-dir`: the identity leaves out the current directory (each
    /// call runs in its caller's directory; needs capability `context`).
    pub(crate) caller_dir: bool,
    /// The interpreter and its own arguments; empty only for `--kill -g`.
    pub(crate) interpreter: Vec<OsString>,
    pub(crate) script: Option<OsString>,
    /// The caller's arguments after the script: what the executor gets.
    pub(crate) args: Vec<OsString>,
    /// `--run`: the interpreter's words end with its language's runner,
    /// which a new server checks is installed before it starts.
    pub(crate) run: bool,
}

/// The outcome of parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    Run(ClientArgs),
    /// `--help`, `--version` or `--completions`: print this to stdout and
    /// exit 0.
    Print(String),
}

const ABOUT: &str = "Runs a script through a server that has done its initialisation once; \
every call is a fork of the initialised server.";

const EXIT_STATUS_HELP: &str = "\
Forms (the kernel passes a #! line's options as one argument):
  prefork-interp [OPTION ...] INTERP [SCRIPT [ARG ...]]
  #!/usr/bin/prefork-interp -U,INTERP[,INTERP-ARG...]
  #!/usr/bin/prefork-interp -U INTERP [INTERP-ARG...]
  prefork-interp [OPTION ...] --run PROGRAM [ARG ...]

Exit status:
  N      the script's own exit status (0..255)
  death  the script was killed by INT, TERM, HUP, PIPE, KILL, USR1, USR2 or
         ALRM: the same signal kills prefork-interp
  N      the script's initialisation failed with exit status N (a message
         says so)
  127    usage error, failure of prefork-interp itself, or the script was
         killed by another signal or dumped core (a message says which)
  0      --kill, --list, --help, --version, --completions";

/// The whole command line's definition: what parses it, --help, and
/// the completion scripts (`completions`).
pub(crate) fn command() -> Command {
    Command::new("prefork-interp")
        .version(env!("CARGO_PKG_VERSION"))
        .about(ABOUT)
        .override_usage("prefork-interp [OPTION ...] INTERP [SCRIPT [ARG ...]]")
        .after_help(EXIT_STATUS_HELP)
        .disable_version_flag(true)
        .arg(
            Arg::new("version")
                .long("version")
                .action(ArgAction::Version)
                .help("Print the version and exit"),
        )
        .arg(
            Arg::new("unlaundered")
                .short('U')
                .action(ArgAction::SetTrue)
                .help(
                    "Unlaundered: the script gets all the caller's arguments and environment \
                     (required, except with --list and --kill -g IDENT)",
                ),
        )
        .arg(
            Arg::new("fresh")
                .short('f')
                .action(ArgAction::SetTrue)
                .help("Start a fresh server even if one runs (the old one quits after its calls)"),
        )
        .arg(
            Arg::new("kill")
                .long("kill")
                .action(ArgAction::SetTrue)
                .conflicts_with("fresh")
                .help("Tear down any server for this identity and run nothing"),
        )
        .arg(
            Arg::new("list")
                .long("list")
                .action(ArgAction::SetTrue)
                .conflicts_with_all(["kill", "fresh"])
                .help("List this user's servers (identity, pid, start, calls, idle time, memory, protocol, command); the identity works with --kill -g"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .requires("list")
                .help("With --list: a JSON array, one object per server, with what the table shows and more (script, why the last server quit, what the identity depends on)"),
        )
        .arg(
            Arg::new("completions")
                .long("completions")
                .value_name("SHELL")
                .value_parser(super::completions::SHELLS)
                // A mode of its own, as --help is: with anything else the
                // command line was meant for something else.
                .exclusive(true)
                .help("Print the completion script for SHELL and exit"),
        )
        .arg(
            Arg::new("run")
                .long("run")
                .action(ArgAction::SetTrue)
                .conflicts_with("list")
                .help("Run an existing Perl, Python or Ruby program unchanged: its #! line names the interpreter, whose runner preloads what it uses (implies -U and --caller-dir)"),
        )
        .arg(
            Arg::new("caller_dir")
                .long("caller-dir")
                .action(ArgAction::SetTrue)
                .help("Identity leaves out the current directory: one server serves every directory, each call running in its caller's (needs a script side of this project's)"),
        )
        .arg(
            Arg::new("env")
                .short('E')
                .value_name("VAR")
                .action(ArgAction::Append)
                .value_parser(clap::value_parser!(OsString))
                // Free text to the completion scripts (no file names).
                .value_hint(ValueHint::Other)
                .help("Identity includes environment variable VAR (its value or absence)"),
        )
        .arg(
            Arg::new("string")
                .short('G')
                .value_name("STRING")
                .action(ArgAction::Append)
                .value_parser(clap::value_parser!(OsString))
                .value_hint(ValueHint::Other)
                .help("Identity includes STRING"),
        )
        .arg(
            Arg::new("ident")
                .short('g')
                .value_name("IDENT")
                .value_parser(clap::value_parser!(OsString))
                .value_hint(ValueHint::Other)
                .help("Use IDENT as the identity instead of the hash"),
        )
        .arg(
            Arg::new("command")
                .value_name("INTERP")
                .help("The interpreter, then the script and the caller's arguments")
                .num_args(0..)
                .trailing_var_arg(true)
                // A command and its own arguments: zsh completes the words
                // after it as that command's (bash's and fish's scripts
                // leave them to file names: `completions`).
                .value_hint(ValueHint::CommandWithArguments)
                .value_parser(clap::value_parser!(OsString)),
        )
}

/// Splits the first argument of the combined forms, or `None` when the
/// command line is in the plain form.
fn split_combined(first: &OsStr) -> Option<Vec<OsString>> {
    let bytes = first.as_bytes();
    if bytes.first() != Some(&b'-') {
        return None;
    }
    let words: Vec<OsString> = if bytes.iter().any(|b| b.is_ascii_whitespace()) {
        bytes
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .map(|w| OsStr::from_bytes(w).to_owned())
            .collect()
    } else if bytes.contains(&b',') {
        bytes
            .split(|&b| b == b',')
            .map(|w| OsStr::from_bytes(w).to_owned())
            .collect()
    } else {
        return None;
    };
    Some(words)
}

/// Where the combined form is among the leading options (skipping the
/// values of -E, -G and -g, which may hold commas), and its words.
fn find_combined(rest: &[OsString]) -> Option<(usize, Vec<OsString>)> {
    let mut at = 0;
    while let Some(word) = rest.get(at) {
        let bytes = word.as_bytes();
        if !bytes.starts_with(b"-") || bytes == b"--" {
            return None; // the command itself: plain form
        }
        if matches!(bytes, b"-E" | b"-G" | b"-g") {
            at += 2;
            continue;
        }
        // Any option may lead the combined form, a long one too
        // (`--kill,-U,perl`): none of ours takes a value in its word.
        if let Some(words) = split_combined(word) {
            return Some((at, words));
        }
        at += 1;
    }
    None
}

/// Parses the client's whole argv (including argv\[0\]).
pub(crate) fn parse(argv: Vec<OsString>) -> Result<Parsed, Failure> {
    let mut argv = argv.into_iter();
    let argv0 = argv.next().unwrap_or_else(|| "prefork-interp".into());
    let rest: Vec<OsString> = argv.collect();

    // The combined form is the kernel's first argument, or by hand the
    // first word after other options (`--kill -U,perl,-w SCRIPT`).
    let (clap_args, after): (Vec<OsString>, Vec<OsString>) = match find_combined(&rest) {
        Some((at, words)) => {
            let mut args = rest[..at].to_vec();
            args.extend(words);
            (args, rest[at + 1..].to_vec())
        }
        None => (rest, Vec::new()),
    };

    let matches = match command().try_get_matches_from(std::iter::once(argv0).chain(clap_args)) {
        Ok(m) => m,
        Err(e) => return help_or_usage_error(&e),
    };
    if let Some(shell) = matches.get_one::<String>("completions") {
        return Ok(Parsed::Print(super::completions::script(shell, command())));
    }

    let mut command: Vec<OsString> = matches
        .get_many::<OsString>("command")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    let given_identity = matches.get_one::<OsString>("ident").cloned();
    let mode = mode_of(&matches);
    let run = matches.get_flag("run");
    // Only a call needs -U: --list, and --kill -g IDENT, name no script.
    let names_no_script =
        matches!(mode, Mode::List { .. }) || (mode == Mode::Kill && given_identity.is_some());
    if !matches.get_flag("unlaundered") && !names_no_script && !run {
        return Err(Failure::new(
            "usage error: -U is required (unlaundered is the only mode); \
             see prefork-interp --help",
        ));
    }
    let identity_items = identity_items_of(&matches);
    if run {
        // PROGRAM [ARG ...], wherever the words came from.
        command.extend(after);
        let Some(program) = (!command.is_empty()).then(|| command.remove(0)) else {
            return Err(Failure::new(
                "usage error: --run needs a PROGRAM; see prefork-interp --help",
            ));
        };
        let (interpreter, script) = run::runner_command(&program)?;
        let (script, args) = (Some(script), command);
        return Ok(Parsed::Run(ClientArgs {
            mode,
            identity_items,
            given_identity,
            caller_dir: true,
            interpreter,
            script,
            args,
            run: true,
        }));
    }

    let (interpreter, script, args) = split_command(command, after);
    if interpreter.is_empty() && !names_no_script {
        return Err(Failure::new(
            "usage error: no interpreter given; see prefork-interp --help",
        ));
    }
    if interpreter.first().is_some_and(|i| i.is_empty()) {
        return Err(Failure::new("usage error: the interpreter name is empty"));
    }

    Ok(Parsed::Run(ClientArgs {
        mode,
        identity_items,
        given_identity,
        caller_dir: matches.get_flag("caller_dir"),
        interpreter,
        script,
        args,
        run: false,
    }))
}

/// The interpreter's words, the script and its arguments: from the
/// plain form's words (or a combined form with no script after it), else
/// the combined form's words and the words after them.
fn split_command(
    mut command: Vec<OsString>,
    after: Vec<OsString>,
) -> (Vec<OsString>, Option<OsString>, Vec<OsString>) {
    if after.is_empty() && !command.is_empty() {
        let interp = command.remove(0);
        let script = (!command.is_empty()).then(|| command.remove(0));
        (vec![interp], script, command)
    } else {
        let mut after = after.into_iter();
        (command, after.next(), after.collect())
    }
}

/// What the command is to do: --list, --kill, --fresh, or call.
fn mode_of(matches: &clap::ArgMatches) -> Mode {
    if matches.get_flag("list") {
        Mode::List {
            json: matches.get_flag("json"),
        }
    } else if matches.get_flag("kill") {
        Mode::Kill
    } else if matches.get_flag("fresh") {
        Mode::Fresh
    } else {
        Mode::Normal
    }
}

/// The -E and -G items, interleaved in command-line order.
fn identity_items_of(matches: &clap::ArgMatches) -> Vec<IdentityItem> {
    let mut items: Vec<(usize, IdentityItem)> = Vec::new();
    for (id, make) in [
        ("env", IdentityItem::EnvVar as fn(OsString) -> IdentityItem),
        ("string", IdentityItem::String),
    ] {
        if let (Some(values), Some(indices)) =
            (matches.get_many::<OsString>(id), matches.indices_of(id))
        {
            for (v, i) in values.zip(indices) {
                items.push((i, make(v.clone())));
            }
        }
    }
    items.sort_by_key(|(i, _)| *i);
    items.into_iter().map(|(_, item)| item).collect()
}

/// --help and --version print; any other error of clap's is a usage error.
fn help_or_usage_error(e: &clap::Error) -> Result<Parsed, Failure> {
    match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            Ok(Parsed::Print(e.render().to_string()))
        }
        _ => Err(Failure::new(one_line_usage_error(e))),
    }
}

/// clap's errors are several lines; we promise one.
fn one_line_usage_error(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or("bad usage");
    let mut first = first.strip_prefix("error: ").unwrap_or(first).to_string();
    // "the following required arguments were not provided:" names them
    // on the indented lines after it.
    if first.ends_with(':') {
        let named: Vec<&str> = lines
            .take_while(|l| l.starts_with(' '))
            .map(str::trim)
            .collect();
        first = format!("{first} {}", named.join(", "));
    }
    // A bad or missing value of an option with a fixed set
    // (`--completions tcsh`): the line after names the set.
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        first = format!("{first} (possible values: {})", valid.join(", "));
    }
    format!("usage error: {first}; see prefork-interp --help")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> ClientArgs {
        let argv = std::iter::once("prefork-interp")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        match parse(argv) {
            Ok(Parsed::Run(a)) => a,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn err(args: &[&str]) -> String {
        let argv = std::iter::once("prefork-interp")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        parse(argv).unwrap_err().message
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn plain_form() {
        let a = run(&["-U", "perl", "s.pl", "a", "-x"]);
        assert_eq!(a.mode, Mode::Normal);
        assert_eq!(a.interpreter, os(&["perl"]));
        assert_eq!(a.script, Some("s.pl".into()));
        assert_eq!(a.args, os(&["a", "-x"]));
    }

    #[test]
    fn comma_form_keeps_interpreter_arguments() {
        let a = run(&["-U,perl,-w", "s.pl", "a", "b"]);
        assert_eq!(a.interpreter, os(&["perl", "-w"]));
        assert_eq!(a.script, Some("s.pl".into()));
        assert_eq!(a.args, os(&["a", "b"]));
    }

    #[test]
    fn space_form() {
        let a = run(&["-U -f -E HOME perl -w", "s.pl"]);
        assert_eq!(a.mode, Mode::Fresh);
        assert_eq!(a.identity_items, vec![IdentityItem::EnvVar("HOME".into())]);
        assert_eq!(a.interpreter, os(&["perl", "-w"]));
        assert_eq!(a.script, Some("s.pl".into()));
        assert!(a.args.is_empty());
    }

    #[test]
    fn identity_options_keep_their_order() {
        let a = run(&["-U,-Gx,-E,V,-G,y,perl", "s"]);
        assert_eq!(
            a.identity_items,
            vec![
                IdentityItem::String("x".into()),
                IdentityItem::EnvVar("V".into()),
                IdentityItem::String("y".into()),
            ]
        );
    }

    #[test]
    fn script_is_optional() {
        let a = run(&["-U", "/bin/prog"]);
        assert_eq!(a.interpreter, os(&["/bin/prog"]));
        assert_eq!(a.script, None);
    }

    #[test]
    fn kill_by_given_identity_needs_no_interpreter() {
        for args in [&["-U", "--kill", "-g", "web"][..], &["--kill", "-g", "web"]] {
            let a = run(args);
            assert_eq!(a.mode, Mode::Kill);
            assert_eq!(a.given_identity, Some("web".into()));
            assert!(a.interpreter.is_empty());
        }
        // A call, or a kill that names a script, still needs -U.
        assert!(err(&["--kill", "perl", "s"]).contains("-U is required"));
    }

    #[test]
    fn comma_form_after_other_options() {
        let a = run(&["--kill", "-U,perl,-w", "s.pl"]);
        assert_eq!(a.mode, Mode::Kill);
        assert_eq!(a.interpreter, os(&["perl", "-w"]));
        assert_eq!(a.script, Some("s.pl".into()));
        // Option values may hold commas: they are not the combined form.
        let a = run(&["-G", "a,b", "-E", "X,Y", "-U,perl", "s", "c,d"]);
        assert_eq!(
            a.identity_items,
            vec![
                IdentityItem::String("a,b".into()),
                IdentityItem::EnvVar("X,Y".into())
            ]
        );
        assert_eq!(a.interpreter, os(&["perl"]));
        assert_eq!(a.args, os(&["c,d"]));
        // A long option may lead it too, as chiark-utils' client takes.
        let a = run(&["--kill,-U,perl", "s.pl"]);
        assert_eq!(
            (a.mode, a.interpreter, a.script),
            (Mode::Kill, os(&["perl"]), Some("s.pl".into()))
        );
        let a = run(&["--caller-dir,-U,perl,-w", "s.pl", "x"]);
        assert!(a.caller_dir);
        assert_eq!((a.interpreter, a.args), (os(&["perl", "-w"]), os(&["x"])));
        // The plain form's arguments are never split.
        let a = run(&["-U", "perl", "s", "-x,y"]);
        assert_eq!(a.args, os(&["-x,y"]));
    }

    #[test]
    fn usage_errors_are_one_line() {
        for e in [
            err(&["perl", "s"]),
            err(&["-U"]),
            err(&["-U", "--bogus", "perl"]),
            err(&["-U,-f,--kill,perl", "s"]),
            err(&["-U,-E"]),
        ] {
            assert!(e.starts_with("usage error: "), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        assert!(err(&["perl", "s"]).contains("-U is required"));
    }

    #[test]
    fn help_and_version() {
        let argv = os(&["prefork-interp", "--help"]);
        match parse(argv).unwrap() {
            Parsed::Print(s) => assert!(s.contains("Exit status") && s.contains("--kill")),
            other => panic!("{other:?}"),
        }
        match parse(os(&["prefork-interp", "--version"])).unwrap() {
            Parsed::Print(s) => assert!(s.contains(env!("CARGO_PKG_VERSION"))),
            other => panic!("{other:?}"),
        }
    }
}
