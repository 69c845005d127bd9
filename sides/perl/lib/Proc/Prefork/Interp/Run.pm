package Proc::Prefork::Interp::Run;

# Runs an unchanged Perl program behind prefork-interp:
#
#   prefork-interp -U,perl,-MProc::Prefork::Interp::Run PROGRAM ARG...
#
# perl compiles `use Proc::Prefork::Interp::Run` (the -M) before the first
# line of PROGRAM, so import() runs in the setup run with PROGRAM open but
# not yet read. It preloads the modules PROGRAM uses, becomes the server
# (prefork_initialisation_complete) and returns in each call's executor,
# where perl goes on to compile and run PROGRAM as the main program: $0,
# @ARGV, STDIN..., die and exit statuses are perl's own.
#
# The one thing the executor must fix: perl's handle on PROGRAM (which
# DATA becomes) shares its file offset with the server and every other
# executor (they are forks). Each executor puts a private open of PROGRAM
# on the same fd, at the offset perl had reached, before perl reads it.

use strict;
use warnings;

use Fcntl qw(SEEK_SET);
use File::Spec ();
use POSIX ();

use constant O_CLOEXEC => 0x80000;    # Linux, on the ABIs with dup3 below

our $VERSION = '0.1.0';

# Lower-case names are pragmas (strict, warnings, lib, ...): nothing to
# gain from preloading them, and `lib`, `if` and friends mean nothing
# without their arguments.
sub _is_module {
    my ($name) = @_;
    return $name =~ /\A[A-Z_][\w]*(?:::\w+)*\z/ && $name !~ /\A(?:CORE|UNIVERSAL)\z/;
}

# The modules PROGRAM's text names in `use Module` lines (any indentation:
# `use` happens at compile time wherever it is) and `require Module` lines
# at the start of a line (indented ones are likely conditional), up to
# __END__ or __DATA__, outside POD; and the literal directories of its
# `use lib` lines. A scan, not a parse: a `use` inside a heredoc or a
# string counts too (then loading it is merely wasted, or logged).
sub _scan {
    my ($text) = @_;
    my (@modules, @lib);
    my $pod = 0;
    for my $line (split /\n/, $text) {
        if ($line =~ /\A=(\w+)/) {
            $pod = $1 ne 'cut';
            next;
        }
        next if $pod;
        last if $line =~ /\A__(?:END|DATA)__\b/;
        if ($line =~ /\A\s*use\s+lib\s+(.*)/) {
            my $args = $1;
            if ($args =~ /\Aqw\s*([^\w\s])/) {
                # qw with any delimiter; a bracket closes with its pair.
                my $close = { '(' => ')', '[' => ']', '{' => '}', '<' => '>' }->{$1} // $1;
                push @lib, split ' ', $1 if $args =~ /\Aqw\s*.([^\Q$close\E]*)/;
            } else {
                push @lib, $1 while $args =~ /'([^'\\]*)'/g;
                push @lib, $1 while $args =~ /"([^"\\\$\@]*)"/g;
            }
        } elsif ($line =~ /\A\s*use\s+([A-Za-z_][\w:]*)/ || $line =~ /\Arequire\s+([A-Za-z_][\w:]*)\s*;/) {
            push @modules, $1 if _is_module($1);
        }
    }
    return (\@modules, \@lib);
}

# Syslog, as the server logs (ident "prefork-interp $0"): the caller's
# stderr is no place for it, preloading being invisible otherwise.
sub _log {
    my ($message) = @_;
    eval {
        require Sys::Syslog;
        Sys::Syslog::setlogsock('native');
        Sys::Syslog::openlog("prefork-interp $0", 'nofatal,pid', 'LOG_USER');
        Sys::Syslog::syslog('info', '%s', $message);
        Sys::Syslog::closelog();
    };
    return;
}

# The fd of perl's handle on PROGRAM: the regular file open on the same
# inode, read-only. Returns (fd, offset) or nothing.
sub _program_fd {
    my ($program) = @_;
    my @want = stat $program or return;
    opendir(my $dir, '/proc/self/fd') or return;
    my @fds = sort { $a <=> $b } grep {/\A[0-9]+\z/} readdir $dir;
    closedir $dir;
    for my $fd (@fds) {
        next if $fd < 3;
        my @st = stat "/proc/self/fd/$fd" or next;
        next unless $st[0] == $want[0] && $st[1] == $want[1];
        open(my $info, '<', "/proc/self/fdinfo/$fd") or next;
        my ($pos, $flags);
        while (<$info>) {
            $pos   = $1 if /\Apos:\s+(\d+)/;
            $flags = oct $1 if /\Aflags:\s+([0-7]+)/;
        }
        close $info;
        next unless defined $pos && defined $flags && ($flags & 3) == POSIX::O_RDONLY();
        return ($fd, $pos);
    }
    return;
}

# dup3(2), which keeps the close-on-exec flag perl set on its handle,
# for x86_64 and the generic table (aarch64, riscv64, loongarch64);
# elsewhere dup2, which loses the flag (the program file stays open
# across the program's exec).
my $SYS_dup3 = do {
    require Config;
    my $arch = $Config::Config{archname} // '';
    $arch =~ /\Ax86_64-linux/ ? 292 : $arch =~ /\A(?:aarch64|riscv64|loongarch64)-linux/ ? 24 : undef;
};

# In the executor: a private open of PROGRAM at `offset` on fd `fd`,
# close-on-exec as perl's was.
sub _private_program {
    my ($program, $fd, $offset) = @_;
    open(my $new, '<', $program) or die "prefork-interp: cannot reopen $program: $!\n";
    sysseek($new, $offset, SEEK_SET) or die "prefork-interp: cannot seek $program: $!\n"
        if $offset;
    if (defined $SYS_dup3) {
        syscall($SYS_dup3, fileno $new, $fd + 0, O_CLOEXEC) >= 0
            or die "prefork-interp: cannot reopen $program: $!\n";
    } else {
        POSIX::dup2(fileno $new, $fd) // die "prefork-interp: cannot reopen $program: $!\n";
    }
    close $new;
    return;
}

sub import {
    my ($class, @explicit) = @_;
    # Run directly: nothing to do, perl runs the program as usual.
    return unless defined $ENV{PREFORK_INTERP};
    # Loaded first: from here, what initialisation (the preloading, its
    # modules) reads of %ENV is tracked (see Proc::Prefork::Interp,
    # ENVIRONMENT).
    require Proc::Prefork::Interp;
    my $program = $0;
    die "prefork-interp: Proc::Prefork::Interp::Run needs a program file, not '$program'\n"
        if $program eq '-e' || $program eq '-' || !-f $program;
    my ($fd, $offset) = _program_fd($program);
    die "prefork-interp: Proc::Prefork::Interp::Run cannot find perl's handle on $program\n"
        unless defined $fd;

    # What to load: PREFORK_INTERP_PRELOAD and the import list (which -M
    # splits on commas; the environment variable takes commas or spaces),
    # then the program's own. "-Module" leaves Module out.
    # (Read untracked: it says what to preload, as the Python runner's.)
    my @listed = (@explicit, split /[\s,]+/,
        Proc::Prefork::Interp::_untracked_env('PREFORK_INTERP_PRELOAD') // '');
    my %skip = map { /\A-(.+)/ ? ($1 => 1) : () } @listed;
    my ($scanned, $lib) = ([], []);
    if (open(my $source, '<', $program)) {
        ($scanned, $lib) = _scan(do { local $/; <$source> // '' });
        close $source;
    }
    my %seen;
    my @modules = grep { length && !/\A-/ && !$skip{$_} && !$seen{$_}++ } @listed, @$scanned;
    # What loading left in $@ (a module's own `eval` that failed), kept
    # for the program as a direct run's compile would leave it.
    my $left_in_eval = '';
    # What the modules warned as they were compiled (under -w, or their
    # own `use warnings`: "Subroutine redefined", a masked `my`...): kept,
    # not shown (the server's start is no call), and warned again in
    # each call, as a direct run's compile of its `use` lines warns.
    # (Not a module's that failed: the program loads it again, and warns.)
    my @warned;

    {
        # The program's `use lib` puts its directories on @INC when it is
        # compiled, in each call; here they are only for preloading.
        local @INC = (@$lib, @INC);
        for my $module (@modules) {
            next unless _is_module($module);
            (my $file = "$module.pm") =~ s{::}{/}g;
            next if $INC{$file};
            my @warned_by_it;
            my $ok = eval {
                local $SIG{__DIE__};
                local $SIG{__WARN__} = sub { push @warned_by_it, $_[0] };
                require $file;
                $left_in_eval = $@;
                1;
            };
            push @warned, @warned_by_it if $ok;
            next if $ok;
            my $error = $@;
            # A module that failed half-way is loaded again by the program
            # (and fails there as it would in a direct run).
            delete $INC{$file};
            $error =~ s/\s+\z//;
            _log("not preloaded: $module: $error");
        }
        # Modules loaded from the program's own lib directories keep
        # their %INC paths; @INC is the program's business again.
    }
    # $! as the preloading left it: a direct run's compile of the same
    # `use` lines searches @INC the same way, and `die` exits with it
    # (json_pp's "not a valid fromformat" exits 2, ENOENT, directly).
    my $errno_after_loading = $! + 0;

    Proc::Prefork::Interp::prefork_autoreload_also_check(File::Spec->rel2abs($program));
    Proc::Prefork::Interp::prefork_initialisation_complete();

    # In the executor, once per call; perl then compiles PROGRAM.
    warn $_ for @warned;
    _private_program($program, $fd, $offset);
    ($!, $?, $@) = ($errno_after_loading, 0, $left_in_eval);
    return;
}

1;

__END__

=head1 NAME

Proc::Prefork::Interp::Run - run an unchanged Perl program behind prefork-interp

=head1 SYNOPSIS

    prefork-interp -U,perl,-MProc::Prefork::Interp::Run PROGRAM ARG...

    # or as the #! line of a wrapper, or of a copy of the program:
    #!/usr/bin/prefork-interp -U,perl,-MProc::Prefork::Interp::Run

    # modules to preload beyond those the program's text names:
    prefork-interp -U,perl,-MProc::Prefork::Interp::Run=Foo PROGRAM
    PREFORK_INTERP_PRELOAD='Foo,Bar::Baz,-Slow::Init' prefork-interp ...

=head1 DESCRIPTION

Runs a Perl program that knows nothing of prefork-interp(1) as if it
called C<prefork_initialisation_complete> of L<Proc::Prefork::Interp>
right at its start, after loading its modules: the server loads the
modules once, and each call compiles and runs the program in a fork of
it.

Loaded with C<-M>, the module's C<import> runs before perl reads the
program's first line. It

=over

=item *

preloads modules: those listed in its import list and in the
environment variable C<PREFORK_INTERP_PRELOAD> (separated by commas or
spaces), then those the program's text names in C<use Module> lines and
in C<require Module;> lines at the start of a line (before C<__END__> or
C<__DATA__>, outside POD). Pragmas (lower-case names) are left alone.
Directories of the program's C<use lib> lines with literal strings are
searched too. A module that fails to load is logged to syslog and
skipped (the program then loads it itself, and fails as it would have).
A listed name with a leading C<-> is never preloaded, e.g. a module that
looks at C<%ENV>, C<@ARGV> or its terminal when it is loaded;

=item *

calls C<prefork_initialisation_complete()> with the default options, the
program being checked for changes as well as every loaded module;

=item *

returns in each call: perl compiles the program (C<BEGIN> blocks, its own
C<use> lines, which find their modules already loaded, its C<#!> line
switches) and runs it as the main program, with C<$0> the program's
path, the caller's C<@ARGV>, C<%ENV>, STDIN, STDOUT and STDERR, C<DATA>
after C<__END__> or C<__DATA__>, and perl's own exit status, C<die>'s
included.

=back

Run without prefork-interp (no C<PREFORK_INTERP> in the environment), it
does nothing.

=head1 CAVEATS

What a preloaded module does when it is loaded happens once, in the
server, with the first caller's environment and arguments and with
F</dev/null> as its standard input and the first caller's stderr as its
standard output; leave such modules out with C<-Module>. Modules are
found by a scan of the text, not by compiling it: one named only in a
string is loaded too, one loaded by a C<use lib> computed at run time
(C<FindBin>) is not preloaded unless its directory is on C<PERL5LIB>.

The program must be a file (not C<-e> or standard input).

=head1 SEE ALSO

L<Proc::Prefork::Interp>, prefork-interp(1)

=head1 LICENSE

As L<Proc::Prefork::Interp>'s: C<MIT OR Apache-2.0>, at your option.

=cut
