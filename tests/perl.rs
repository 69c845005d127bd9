//! Perl-only behaviour of sides/perl/lib/Proc/Prefork/Interp.pm (and its
//! modules, sides/perl/lib/Proc/Prefork/Interp/*.pm), beyond the
//! shared conformance table: $0, destructors, %INC auto-reload, SIGPIPE,
//! and the module's own hygiene (perl -c, podchecker, its manual page).
mod common;

use std::ffi::OsString;
use std::process::Command;
use std::time::Duration;

use common::*;

/// A world whose script is `body` after our module's `use lib` line.
fn perl_world(body: &str) -> Harness {
    let text = format!(
        "use lib '{}';\n{body}",
        repo().join("sides/perl/lib").display()
    );
    Harness::custom(
        Side::Perl,
        client(),
        vec![OsString::from("perl"), OsString::from("-w")],
        None,
        &text,
    )
}

#[test]
fn dollar_zero_is_the_script_path() {
    let h = perl_world(
        "use Proc::Prefork::Interp;\nprefork_initialisation_complete();\nprint \"$0\\n\";\n",
    );
    for _ in 0..2 {
        let out = h.call(&[] as &[&str]).run();
        assert_success(&out);
        assert_eq!(stdout_str(&out), format!("{}\n", h.script.display()));
    }
    h.finish();
}

#[test]
fn destructors_and_end_blocks_run_once_per_call_in_the_executor() {
    let h = perl_world(
        r#"use Proc::Prefork::Interp;
package Guard;
sub new { my ($class, $file) = @_; bless { file => $file }, $class }
sub DESTROY { my $s = shift; open my $f, '>>', $s->{file} or die; print $f "destroy\n" }
package main;
my $record = $ENV{PFI_RECORD};
our $guard = Guard->new($record);
END { open my $f, '>>', $record or die; print $f "end\n" }
prefork_initialisation_complete();
print "call\n";
"#,
    );
    let record = h.path("record");
    // Both calls, and the kill, with PFI_RECORD: initialisation reads it,
    // so a caller without it would (rightly) have a server of its own.
    for _ in 0..2 {
        assert_success(&h.call(&[] as &[&str]).env("PFI_RECORD", &record).run());
    }
    let kill = h.call_with_options(&["--kill"], &[] as &[&str]);
    assert_success(&kill.env("PFI_RECORD", &record).run());
    wait_until("every process to exit", Duration::from_secs(10), || {
        h.processes().is_empty()
    })
    .unwrap();
    let lines = std::fs::read_to_string(&record).unwrap();
    assert_eq!(lines, "end\ndestroy\n".repeat(2));
    h.finish();
}

/// `fast_exit => 1`: every way a call can end gives the status, output
/// and END blocks of a direct run with the same option; what goes is
/// global destruction (DESTROY of an object alive at exit), as the POD
/// says, while an object that goes out of scope earlier is destroyed.
#[test]
fn fast_exit_ends_exactly_and_skips_only_global_destruction() {
    let h = perl_world(
        r#"use strict;
use Proc::Prefork::Interp;
package Guard;
sub new { my ($class, $what) = @_; bless { what => $what }, $class }
sub DESTROY { my $s = shift; open my $f, '>>', $ENV{PFI_RECORD} or die; print $f "destroy $s->{what}
" }
package main;
our $global = Guard->new('global');
END {
    open my $f, '>>', $ENV{PFI_RECORD} or die;
    print $f "end $?
";
    $? = $1 if ($ARGV[0] // '') =~ /\Aend-sets:(\d+)\z/;
}
prefork_initialisation_complete(fast_exit => 1);
{ my $scoped = Guard->new('scoped'); }
# Buffered output, on a pipe and in a file, must all arrive.
print "out ", "x" x 5000, "
";
print STDERR "err
";
open my $file, '>', $ENV{PFI_FILE} or die;
print $file "file
";
my $how = $ARGV[0] // '';
exit $1 if $how =~ /\Aexit:(\d+)\z/;
if ($how eq 'die') { $! = 0; $? = 0; die "dying
" }
exit 3 if $how =~ /\Aend-sets:/;
print "fell off the end
";
"#,
    );
    let record = h.path("record");
    let file = h.path("file");
    for how in ["", "exit:0", "exit:7", "die", "end-sets:9"] {
        let mut seen = Vec::new();
        for through_us in [true, false] {
            let _ = std::fs::remove_file(&record);
            let _ = std::fs::remove_file(&file);
            let call = if through_us {
                h.call(&[how])
            } else {
                h.direct(&[how])
            };
            let out = call.env("PFI_RECORD", &record).env("PFI_FILE", &file).run();
            seen.push((
                out.status.code(),
                stdout_str(&out),
                stderr_str(&out),
                std::fs::read_to_string(&record).unwrap(),
                std::fs::read_to_string(&file).unwrap(),
            ));
        }
        assert_eq!(seen[0], seen[1], "{how:?}: through us, then directly");
        let (status, stdout, stderr, record, file) = &seen[0];
        let expected = match how {
            "exit:7" => 7,
            "die" => 255,
            "end-sets:9" => 9,
            _ => 0,
        };
        assert_eq!(*status, Some(expected), "{how:?}");
        assert!(
            stdout.starts_with(&format!("out {}\n", "x".repeat(5000))),
            "{how:?}"
        );
        assert!(stderr.starts_with("err\n"), "{how:?}: {stderr}");
        assert_eq!(file, "file\n", "{how:?}");
        let end_status = if how == "end-sets:9" { 3 } else { expected };
        assert_eq!(
            record,
            &format!("destroy scoped\nend {end_status}\n"),
            "{how:?}: END ran, the global object was not destroyed"
        );
    }
    h.finish();
}

const SERVER_PID_BODY: &str = r#"use Proc::Prefork::Interp;
use PfiTestModule;
prefork_initialisation_complete(%PfiTestModule::OPTIONS);
open my $f, '<', '/proc/' . getppid() . '/stat' or die;
(<$f> =~ /\)\s+\S+\s+(\d+)/) or die;
print "$1\n";
"#;

fn module_world(options: &str) -> (Harness, std::path::PathBuf) {
    let h = perl_world(&format!("use lib '{}';\n{SERVER_PID_BODY}", "LIBDIR"));
    let lib = h.path("lib");
    std::fs::create_dir(&lib).unwrap();
    let module = lib.join("PfiTestModule.pm");
    std::fs::write(
        &module,
        format!("package PfiTestModule;\nour %OPTIONS = ({options});\n1;\n"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&h.script)
        .unwrap()
        .replace("LIBDIR", lib.to_str().unwrap());
    std::fs::write(&h.script, text).unwrap();
    (h, module)
}

#[test]
fn editing_a_loaded_module_restarts_the_server() {
    let (h, module) = module_world("");
    let old = h.plain_call();
    assert_eq!(h.plain_call(), old);
    touch(&module);
    let new = h.plain_call();
    assert_ne!(new, old, "a module in %INC changed");
    assert_eq!(h.plain_call(), new);
    h.finish();
}

#[test]
fn autoreload_inc_off_ignores_modules() {
    let (h, module) = module_world("autoreload_inc => 0");
    let old = h.plain_call();
    touch(&module);
    assert_eq!(
        h.plain_call(),
        old,
        "autoreload_inc => 0: modules are not watched"
    );
    h.finish();
}

/// SIGPIPE as the caller has it (perl leaves it as it finds it): the
/// first caller, which starts the server, ignores it, as a direct run
/// then does; the next caller's default is not the first one's.
#[test]
fn sigpipe_as_the_caller_has_it() {
    let h = Harness::new(Side::Perl);
    let direct = h.direct(&["@sigdisp:PIPE"]).ignoring(libc::SIGPIPE).run();
    assert_eq!(stdout_str(&direct), "ignore\n");
    let out = h.call(&["@sigdisp:PIPE"]).ignoring(libc::SIGPIPE).run();
    assert_eq!(stdout_str(&out), "ignore\n");
    let out = h.call(&["@sigdisp:PIPE"]).run();
    assert_eq!(stdout_str(&out), "default\n");
    h.finish();
}

#[test]
fn standalone_script_runs_normally() {
    let h = Harness::new(Side::Perl);
    let out = h.direct(&["@args", "x"]).run();
    assert_success(&out);
    assert_eq!(
        stdout_str(&out),
        format!("{}\n{}\n", hex(b"@args"), hex(b"x"))
    );
    h.finish();
}

const MODULE: &str = "sides/perl/lib/Proc/Prefork/Interp.pm";

/// Every module file of the Perl side (tools/module-files, the one list),
/// as paths from the repository's top.
fn module_files() -> Vec<String> {
    let out = Command::new(repo().join("tools/module-files"))
        .arg("perl")
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tools/module-files: {}",
        stderr_str(&out)
    );
    let files: Vec<String> = stdout_str(&out)
        .lines()
        .map(|m| format!("sides/perl/lib/{m}"))
        .collect();
    assert!(
        files.iter().any(|f| f == MODULE),
        "tools/module-files perl does not list {MODULE}: {files:?}"
    );
    files
}

#[test]
fn module_compiles_and_its_pod_is_clean() {
    for module in module_files() {
        let out = Command::new("perl")
            .args(["-wc", "-I", "sides/perl/lib"])
            .arg(&module)
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "perl -c {module}: {}",
            stderr_str(&out)
        );
        assert_eq!(
            stderr_str(&out),
            format!("{module} syntax OK\n"),
            "perl -wc {module}: warnings"
        );
    }
    let out = Command::new("podchecker")
        .arg(MODULE)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "podchecker: {}", stderr_str(&out));
    let all = stdout_str(&out) + &stderr_str(&out);
    assert!(!all.contains("WARNING"), "podchecker warnings: {all}");
}

/// The manual page is the POD rendered by `tools/render-man`: it must
/// be in step with the module.
#[test]
fn manual_page_matches_the_pod() {
    let out = Command::new("tools/render-man")
        .arg("--stdout")
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_str(&out));
    let committed = std::fs::read(repo().join("man/Proc::Prefork::Interp.3pm")).unwrap();
    assert!(
        out.stdout == committed,
        "man/Proc::Prefork::Interp.3pm is out of date: run tools/render-man"
    );
}

/// The fd order of PREFORK_INTERP is chiark-utils' (captured from its
/// client): LISTEN, CALL, WATCHI (a pipe's write end), WATCHE.
#[test]
fn setup_variable_is_read_in_chiarks_order() {
    let out = Command::new("perl")
        .args(["-I", "sides/perl/lib", "-MProc::Prefork::Interp", "-e"])
        .arg(
            "for my $v ('v1,1795467572.582498935 5,9,7,8', \
                        'v1,1795467572.582498935 5,9,7,8 pfi-caps=signals,later') {\
               my $s = Proc::Prefork::Interp::Wire::decode_setup_env($v);\
               print join(' ', @$s{qw(listen call watch_in watch_err)}, sort @{$s->{client_caps}}), \"\\n\";\
             }",
        )
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(
        stdout_str(&out),
        "5 9 7 8\n5 9 7 8 later signals\n",
        "{}",
        stderr_str(&out)
    );
}

#[test]
fn server_watches_files_with_inotify() {
    let (h, _) = module_world("");
    assert!(holds_inotify(&h.plain_call()));
    h.finish();
}

/// The greeting's `env` line: the names read through %ENV from the
/// module's loading to initialisation's end (not by iteration or a copy,
/// not PREFORK_INTERP, not a name a line cannot carry), sorted, and the
/// SHA-256 of their exec-time values, here checked against Python's
/// hashlib; while the stand-in is there, writes reach C's environ and
/// `local` and `delete` work, and the real %ENV is back afterwards.
#[test]
fn environment_read_in_initialisation_is_tracked_and_digested() {
    let perl = r#"
        use Proc::Prefork::Interp;
        my %copy = %ENV;
        my @values = values %ENV;
        my $a = exists $ENV{PFI_A};
        my $b = $ENV{PFI_B};
        my $u = defined $ENV{PFI_UNSET};
        my $p = $ENV{PREFORK_INTERP};
        my $s = $ENV{'WITH SPACE'};
        $ENV{PFI_W} = 'written';
        print `echo "w=\$PFI_W"`;
        { local $ENV{PFI_L} = 'local'; print `echo "l=\$PFI_L"`; }
        print `echo "l=\${PFI_L-unset}"`;
        delete $ENV{PFI_D};
        print `echo "d=\${PFI_D-unset}"`;
        my $dependency = Proc::Prefork::Interp::_init_env()->dependency;
        print "env $dependency->{digest} @{$dependency->{names}}\n";
        prefork_initialisation_complete();
        print tied(%ENV) ? "tied\n" : "real\n";
        { local $ENV{PFI_W} = 'again'; print `echo "w=\$PFI_W"`; }
        print `echo "w=\$PFI_W"`;
    "#;
    let out = Command::new("perl")
        .args(["-w", "-I", "sides/perl/lib", "-e", perl])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("PFI_A", "1")
        .env("PFI_B", "two words")
        .env("PFI_D", "deleted")
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_str(&out));
    // The digest as the client (the crate's codec) computes it.
    let names: Vec<Vec<u8>> = ["PFI_A", "PFI_B", "PFI_L", "PFI_UNSET"]
        .iter()
        .map(|n| n.as_bytes().to_vec())
        .collect();
    let digest = prefork_interp::protocol::env_digest(&names, |name| match name {
        b"PFI_A" => Some(b"1".to_vec()),
        b"PFI_B" => Some(b"two words".to_vec()),
        _ => None,
    });
    assert_eq!(
        stdout_str(&out),
        format!(
            "w=written\nl=local\nl=unset\nd=unset\nenv {} PFI_A PFI_B PFI_L PFI_UNSET\nreal\nw=again\nw=written\n",
            digest
        )
    );
}

/// The script's code after `prefork_initialisation_complete` finds `$!`,
/// `$?` and `$@` as they were when it called it, as without us: `die`
/// exits with `$!` (here EIO, 5) in a direct run and in every call.
#[test]
fn errno_and_friends_are_as_the_script_left_them() {
    let h = perl_world(
        "use Proc::Prefork::Interp;\n$! = 5; $? = 256; eval { die \"left\\n\" };\n\
         prefork_initialisation_complete();\nprint \"[$?] [$@]\";\ndie \"gone\\n\";\n",
    );
    let direct = h.direct(&[] as &[&str]).run();
    assert_eq!(direct.status.code(), Some(5), "{direct:?}");
    for round in 0..2 {
        let out = h.call(&[] as &[&str]).run();
        assert_eq!(
            (out.status.code(), stdout_str(&out), stderr_str(&out)),
            (
                direct.status.code(),
                stdout_str(&direct),
                stderr_str(&direct)
            ),
            "call {round} (left) against a direct run"
        );
    }
    h.finish();
}

/// Perl's own start-up variables (hash seed and key order, the Unicode
/// switches, PERL5OPT's switches) are inputs of the initialisation: a
/// call with other values than the server's reaches a server started
/// with its values, and sees what a direct run does.
#[test]
fn interpreter_start_up_variables_like_a_direct_run() {
    let h = perl_world(
        "use Proc::Prefork::Interp;\nprefork_initialisation_complete();\n\
         my %h = map { ($_ => 1) } 'a' .. 'p';\n\
         print join('', keys %h), ' ', ${^UNICODE}, ' ', $^W, \"\\n\";\n",
    );
    let cases: [&[(&str, &str)]; 4] = [
        &[("PERL_HASH_SEED", "1"), ("PERL_PERTURB_KEYS", "0")],
        &[("PERL_HASH_SEED", "2"), ("PERL_PERTURB_KEYS", "0")],
        &[
            ("PERL_HASH_SEED", "1"),
            ("PERL_PERTURB_KEYS", "0"),
            ("PERL_UNICODE", "S"),
        ],
        &[
            ("PERL_HASH_SEED", "3"),
            ("PERL_PERTURB_KEYS", "0"),
            ("PERL5OPT", "-W"),
        ],
    ];
    h.same_stdout_as_direct_under(&cases);
    h.finish();
}

/// The environment read before our module loads (a BEGIN block, the
/// `use` lines above ours) is an input of the initialisation too: a call
/// whose value differs reaches a server started with its value, as for a
/// variable read after the module loads. (Where the module is in perl's
/// own @INC, here through PERL5LIB: a `use lib` line comes too late.)
/// Nothing of the request shows: `$!`, `$@`, and %ENV's tie once
/// initialisation is over, are a direct run's.
#[test]
fn environment_read_before_the_module_loads_like_a_direct_run() {
    let h = Harness::custom(
        Side::Perl,
        client(),
        vec![OsString::from("perl"), OsString::from("-w")],
        None,
        "my ($early, $errno, $error);
         BEGIN { $early = $ENV{PFI_EARLY}; ($errno, $error) = ($! + 0, $@) }
         use Proc::Prefork::Interp;
         prefork_initialisation_complete();
         print defined $early ? \"[$early]\" : 'unset', \" $errno [$error] \",
             tied(%ENV) ? 'tied' : 'real', \"\\n\";
",
    );
    let lib = repo().join("sides/perl/lib");
    let lib = lib.to_str().unwrap();
    let cases: [&[(&str, &str)]; 3] = [
        &[("PERL5LIB", lib), ("PFI_EARLY", "first")],
        &[("PERL5LIB", lib), ("PFI_EARLY", "second")],
        &[("PERL5LIB", lib)],
    ];
    h.same_stdout_as_direct_under(&cases);
    h.finish();
}

/// INTERPRETER_VARIABLES (Proc::Prefork::Interp::InitEnv) against perl's
/// own list, perlrun's ENVIRONMENT (Debian's perl-doc): each variable
/// there is in it, or here with the reason it is not an input of the
/// initialisation.
#[test]
fn interpreter_variables_cover_perlrun() {
    const NOT_AT_START: [(&str, &str); 9] = [
        (
            "HOME",
            "chdir() without an argument reads it then: the call's own",
        ),
        (
            "LOGDIR",
            "chdir() without an argument reads it then: the call's own",
        ),
        ("PATH", "perl -S only; the client finds the script"),
        (
            "PERL_DL_NONLAZY",
            "read from %ENV as a module loads: tracked as any read",
        ),
        ("PERL_ENCODING", "gone since 5.26"),
        ("PERL5SHELL", "Win32 only"),
        ("PERL_ALLOW_NON_IFS_LSP", "Win32 only"),
        ("PERL_ROOT", "VMS only"),
        ("SYS$LOGIN", "VMS only"),
    ];
    let pod = Command::new("perldoc").args(["-l", "perlrun"]).output();
    let pod = pod
        .ok()
        .filter(|out| out.status.success())
        .map(|out| stdout_str(&out).trim().to_string())
        .expect("perlrun.pod (Debian's perl-doc; ./test installs it)");
    let text = std::fs::read_to_string(&pod).unwrap();
    let environment = text
        .split("\n=head1 ENVIRONMENT")
        .nth(1)
        .expect("perlrun has an ENVIRONMENT section");
    let environment = environment.split("\n=head1 ").next().unwrap();
    let documented: Vec<&str> = environment
        .lines()
        .filter_map(|line| line.strip_prefix("=item "))
        .filter_map(|item| item.split_whitespace().next())
        .filter(|name| !name.starts_with(':'))
        .collect();
    let listed = Command::new("perl")
        .args([
            "-I",
            "sides/perl/lib",
            "-MProc::Prefork::Interp::InitEnv",
            "-e",
        ])
        .arg("print join ' ', Proc::Prefork::Interp::InitEnv::INTERPRETER_VARIABLES")
        .current_dir(repo())
        .output()
        .unwrap();
    assert_success(&listed);
    let listed = stdout_str(&listed);
    let listed: Vec<&str> = listed.split_whitespace().collect();
    assert_interpreter_variables_cover(&documented, &listed, &NOT_AT_START, "perlrun");
}
