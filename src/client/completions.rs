//! `prefork-interp --completions SHELL`: the completion scripts, made by
//! clap_complete from the same definition as the command line and
//! --help (`cli::command`), so that they cannot drift from it.
//!
//! clap_complete's bash and fish scripts offer our options at every word,
//! but the words after the interpreter are the script's and its
//! arguments' (`prefork-interp -U perl s.pl --verbose`): each gets a
//! guard that sees where our options end, as `cli::find_combined` does
//! (a word that is not an option, `--`, or a combined form
//! `-U,perl,-w`, skipping the values of the options that take one), and
//! leaves the words after it to file names. zsh's needs none: its
//! `_arguments` spec for the trailing positional (`*::`) ends our options
//! at the first word that is not one, and the positional's hint
//! (`CommandWithArguments`) has it complete a command name and then that
//! command's own words.

use clap::Command;
use clap_complete::Shell;

/// The shells `--completions` takes (clap's error names them).
pub(crate) const SHELLS: [&str; 3] = ["bash", "zsh", "fish"];

const NAME: &str = "prefork-interp";

/// The completion script for `shell`, one of `SHELLS`, of `command`:
/// the command line's whole definition, which `cli` (the one module
/// that knows it, and imports this one) passes in.
pub(crate) fn script(shell: &str, mut command: Command) -> String {
    let takes_value = value_options(&command);
    let generated = |shell: Shell, command: &mut Command| {
        let mut out = Vec::new();
        clap_complete::generate(shell, command, NAME, &mut out);
        String::from_utf8(out).expect("clap_complete writes UTF-8")
    };
    match shell {
        "bash" => bash(&generated(Shell::Bash, &mut command), &takes_value),
        "zsh" => generated(Shell::Zsh, &mut command),
        "fish" => fish(&generated(Shell::Fish, &mut command), &takes_value),
        other => unreachable!("clap lets only SHELLS through, not {other}"),
    }
}

/// The options whose value may be the next word (`-E VAR`), as they are
/// written: the guards must skip that word, which may look like anything.
fn value_options(command: &Command) -> Vec<String> {
    let mut words = Vec::new();
    for arg in command.get_arguments() {
        if arg.is_positional() || !arg.get_action().takes_values() {
            continue;
        }
        let shorts = arg.get_short_and_visible_aliases().unwrap_or_default();
        let longs = arg.get_long_and_visible_aliases().unwrap_or_default();
        words.extend(shorts.iter().map(|c| format!("-{c}")));
        words.extend(longs.iter().map(|l| format!("--{l}")));
    }
    words
}

/// clap_complete's function (`_prefork__interp`), registered behind a
/// guard that returns nothing once the interpreter is named, so that
/// `-o default` completes file names.
fn bash(generated: &str, takes_value: &[String]) -> String {
    // clap_complete names its function after the command, `-` as `__`.
    let inner = format!("_{}", NAME.replace('-', "__"));
    let guard = format!("{inner}_guarded");
    let registered = generated.replace(
        &format!("complete -F {inner} "),
        &format!("complete -F {guard} "),
    );
    format!(
        "{registered}
# Our options end at the interpreter: the first word that is not one, --,
# or a combined form (-U,perl,-w); the words after it are the script's.
{guard}() {{
    local i=1
    while (( i < COMP_CWORD )); do
        case ${{COMP_WORDS[i]}} in
            {value_options}) (( i += 2 )) ;;
            --|-*[,[:space:]]*|[!-]*|'') COMPREPLY=(); return 0 ;;
            *) (( i += 1 )) ;;
        esac
    done
    {inner} \"$@\"
}}
",
        value_options = takes_value.join("|"),
    )
}

/// clap_complete's `complete` lines, each with a condition that holds
/// only while the word is still before the interpreter; fish completes
/// file names where none of them applies.
fn fish(generated: &str, takes_value: &[String]) -> String {
    let guard = format!("__{}_options", NAME.replace('-', "_"));
    let complete = format!("complete -c {NAME} ");
    let guarded = generated.replace(&complete, &format!("{complete}-n {guard} "));
    format!(
        "# Our options end at the interpreter: the first word that is not one, --,
# or a combined form (-U,perl,-w); the words after it are the script's.
function {guard}
    set -l words (commandline -opc)
    set -l i 2
    while test $i -le (count $words)
        if contains -- $words[$i] {value_options}
            set i (math $i + 2)
        else if test \"$words[$i]\" != -- && string match -qr -- '^-[^,\\s]*$' $words[$i]
            set i (math $i + 1)
        else
            return 1
        end
    end
    return 0
end
{guarded}",
        value_options = takes_value.join(" "),
    )
}
