//! `prefork-interp --completions SHELL`: the scripts load in the real
//! shells and complete our options up to the interpreter, none after it;
//! a shell we have no script for is a one-line usage error.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The client's script for `shell`, written to a file in `dir`.
fn script(dir: &Path, shell: &str) -> PathBuf {
    let out = Command::new(client())
        .args(["--completions", shell])
        .output()
        .unwrap();
    assert_success(&out);
    assert!(out.stderr.is_empty(), "{}", stderr_str(&out));
    let path = dir.join(format!("prefork-interp.{shell}"));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// A command line being completed: the words before the cursor, and the
/// word being completed.
type Line = (&'static [&'static str], &'static str);

/// What each shell must offer: (line, offered, not offered). After the
/// interpreter the words are the script's: none of our options.
const CASES: &[(Line, &[&str], &[&str])] = &[
    ((&[], "--co"), &["--completions"], &["--kill"]),
    (
        (&["--completions"], ""),
        &["bash", "zsh", "fish"],
        &["--kill"],
    ),
    (
        (&[], "-"),
        &["--run", "--kill", "--list", "--completions", "-U"],
        &[],
    ),
    ((&["-U"], "--k"), &["--kill"], &[]),
    // A value with a comma is not the combined form.
    ((&["-E", "X,Y"], "--k"), &["--kill"], &[]),
    ((&["-U", "perl", "s.pl"], "-"), &[], &["--kill", "-U"]),
    ((&["-U", "perl"], "--"), &[], &["--kill", "--run"]),
    ((&["-U,perl,-w", "s.pl"], "--"), &[], &["--kill"]),
    ((&["--run", "corelist"], "-"), &[], &["--kill", "-U"]),
    ((&["-U", "--"], "-"), &[], &["--kill"]),
];

/// The line as typed: the command, the words before, the word.
fn typed((before, word): Line) -> String {
    let mut line = String::from("prefork-interp ");
    for w in before {
        line.push_str(w);
        line.push(' ');
    }
    line + word
}

#[track_caller]
fn check(shell: &str, line: Line, got: &BTreeSet<String>, offered: &[&str], not: &[&str]) {
    for word in offered {
        assert!(
            got.contains(*word),
            "{shell}, {line:?}: no {word} in {got:?}"
        );
    }
    for word in not {
        assert!(!got.contains(*word), "{shell}, {line:?}: {word} in {got:?}");
    }
}

/// bash (no bash-completion needed): the script registers a function for
/// prefork-interp; called as bash calls it (COMP_WORDS, COMP_CWORD,
/// COMP_LINE, COMP_POINT; the command, the word, the word before), its
/// COMPREPLY. With nothing in COMPREPLY, `-o default` has bash complete
/// file names: the script's arguments.
#[test]
fn bash_completes_options_up_to_the_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    let file = script(dir.path(), "bash");
    let mut program = String::from(
        r#"source "$1" || exit 1
spec=$(complete -p prefork-interp) || exit 1
echo "$spec"
fn=${spec#*-F }; fn=${fn%% *}
complete_line() {
    COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
    COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
    COMPREPLY=()
    "$fn" prefork-interp "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    printf '%s\n' "${COMPREPLY[*]}"
}
"#,
    );
    for ((before, word), _, _) in CASES {
        program.push_str("complete_line prefork-interp");
        for w in before.iter().chain([word]) {
            program.push_str(&format!(" '{w}'"));
        }
        program.push('\n');
    }
    let out = succeeded(
        Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &program, "bash"])
            .arg(&file),
        "Debian package bash",
    );
    let out = stdout_str(&out);
    let mut lines = out.lines();
    let spec = lines.next().unwrap();
    assert!(
        spec.contains("-o default") && spec.ends_with(" prefork-interp"),
        "{spec}"
    );
    let replies: Vec<&str> = lines.collect();
    assert_eq!(replies.len(), CASES.len(), "{out}");
    for ((line, offered, not), reply) in CASES.iter().zip(replies) {
        let got = reply.split_whitespace().map(String::from).collect();
        check("bash", *line, &got, offered, not);
    }
    // Exactly the one option, for a single match the shell inserts.
    assert_eq!(out.lines().nth(1), Some("--completions"), "{out}");
}

/// fish: the script parses, and fish's own `complete -C` (what it offers
/// for a command line) through it.
#[test]
fn fish_completes_options_up_to_the_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    let file = script(dir.path(), "fish");
    let fish = |args: &[&str]| {
        let out = succeeded(
            Command::new("fish")
                .arg("--no-config")
                .args(args)
                .env("HOME", dir.path())
                .env("XDG_CONFIG_HOME", dir.path())
                .env("XDG_DATA_HOME", dir.path())
                .current_dir(dir.path()),
            "Debian package fish",
        );
        stdout_str(&out)
    };
    fish(&["--no-execute", file.to_str().unwrap()]);
    for (line, offered, not) in CASES {
        let program = format!("source {}; complete -C '{}'", file.display(), typed(*line));
        // Each candidate, then a tab and its description.
        let got = fish(&["-c", &program])
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect();
        check("fish", *line, &got, offered, not);
    }
}

/// Drives an interactive zsh on a pseudo-terminal (zsh/zpty): types each
/// line given and a tab, and prints, a line per line, every candidate
/// compadd was given (matched against the word; none is added, so that
/// zsh lists nothing that could wait for an answer).
/// `zsh -f DRIVER FPATH-DIR LOG LINE...`
const ZSH_DRIVER: &str = r#"
zmodload zsh/zpty || exit 1
dir=$1 log=$2; shift 2
zpty z zsh -f -i || exit 1
# Waits for the inner shell to have run everything sent before, and for
# its next prompt: zle drops what is typed before it is ready.
sync() {
    zpty -w z "print -r -- synced\$(( $1 * 7 ))"
    zpty -r z out "*synced$(( $1 * 7 ))"$'\r\n' && zpty -r z out '*<ready>'
}
zpty -w z "PS1='<ready>'; unset zle_bracketed_paste; fpath=(${(q)dir} \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z "compadd() { local -a m; builtin compadd -O m \"\$@\"; print -rl -- \$m >> ${(q)log}; }"
sync 0 || exit 1
i=0
for line in "$@"; do
    (( i++ ))
    : > $log
    zpty -w -n z "$line"$'\t\C-u'
    sync $i || exit 1
    print -r -- "${(j: :)${(@f)$(<$log)}}"
done
zpty -d z
"#;

/// zsh: the script parses (`zsh -n`), and a real zsh, with it in its
/// fpath as `_prefork-interp` (as installed), completes through it: the
/// interpreter as a command name (the positional's hint), and the words
/// after it as for that command, not our options.
#[test]
fn zsh_completes_options_up_to_the_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    let file = script(dir.path(), "zsh");
    succeeded(
        Command::new("zsh").arg("-n").arg(&file),
        "Debian package zsh",
    );
    let functions = dir.path().join("functions");
    std::fs::create_dir(&functions).unwrap();
    std::fs::rename(&file, functions.join("_prefork-interp")).unwrap();
    let lines: Vec<String> = CASES
        .iter()
        .map(|(line, _, _)| typed(*line))
        .chain(["prefork-interp -U per".to_string()])
        .collect();
    // (timeout: a zsh that never prompts fails the test, not hangs it.)
    let out = succeeded(
        Command::new("timeout")
            .args(["60", "zsh", "-f", "-c", ZSH_DRIVER, "zsh"])
            .arg(&functions)
            .arg(dir.path().join("log"))
            .args(&lines)
            .env("HOME", dir.path())
            .current_dir(dir.path()),
        "Debian package zsh",
    );
    let out = stdout_str(&out);
    let replies: Vec<&str> = out.lines().collect();
    assert_eq!(replies.len(), CASES.len() + 1, "{out}");
    for ((line, offered, not), reply) in CASES.iter().zip(&replies) {
        let got = reply.split_whitespace().map(String::from).collect();
        check("zsh", *line, &got, offered, not);
    }
    // (perl: Debian's perl-base, essential.)
    let commands = replies[CASES.len()]
        .split_whitespace()
        .map(String::from)
        .collect();
    check("zsh", (&["-U"], "per"), &commands, &["perl"], &[]);
}

/// Any other shell, or none: clap's error on one line, naming the shells,
/// and the usage error's status; nothing on stdout. With anything else
/// on the command line it is a usage error too (it is a mode of its own).
#[test]
fn other_shells_are_a_usage_error() {
    for (args, needle) in [
        (&["--completions", "tcsh"][..], "invalid value 'tcsh'"),
        (&["--completions"], "a value is required"),
        (&["--completions", "bash", "-U", "perl"], "cannot be used"),
    ] {
        let out = Command::new(client()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(127), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        let err = stderr_str(&out);
        assert!(
            err.starts_with("prefork-interp: usage error: ") && err.lines().count() == 1,
            "{args:?}: {err}"
        );
        assert!(err.contains(needle), "{args:?}: {err}");
        if args.len() < 3 {
            assert!(
                err.contains("(possible values: bash, zsh, fish)"),
                "{args:?}: {err}"
            );
        }
    }
}
