package PfiTest;

# Helpers for the distribution's tests: run a program with given
# arguments, environment and stdin, and collect what it did.

use strict;
use warnings;

use Cwd ();
use Exporter qw(import);
use File::Spec ();
use File::Temp ();
use POSIX ();

our @EXPORT = qw(module_lib run_program perl_script);

# The directory the module under test was loaded from (blib/lib under
# `make test`), absolute: scripts run in other directories and processes.
sub module_lib {
    require Proc::Prefork::Interp;
    my $file = Cwd::abs_path($INC{'Proc/Prefork/Interp.pm'});
    my @dirs = File::Spec->splitdir((File::Spec->splitpath($file))[1]);
    pop @dirs while @dirs && $dirs[-1] eq '';
    splice @dirs, -2;    # Proc/Prefork
    return File::Spec->catdir(@dirs);
}

my $scratch = File::Temp->newdir;

# Writes a Perl script (TEXT after a `use lib` of the module under test)
# and returns its path.
sub perl_script {
    my ($text, %opt) = @_;
    my ($fh, $path) = File::Temp::tempfile(DIR => $opt{dir} // $scratch, SUFFIX => '.pl');
    print $fh $opt{first_line} // '', "use lib '", module_lib(), "';\n", $text;
    close $fh or die "cannot write $path: $!";
    chmod 0755, $path;
    return $path;
}

# Runs COMMAND (a list, no shell) with stdin from `stdin`, `env` laid over
# %ENV (undef deletes) and PREFORK_INTERP removed unless given. Returns a
# hash: status (exit status, or undef if killed), signal, stdout, stderr.
sub run_program {
    my ($command, %opt) = @_;
    my $dir = File::Temp->newdir;
    my %file = map { ($_ => "$dir/$_") } qw(stdin stdout stderr);
    open(my $in, '>', $file{stdin}) or die "$file{stdin}: $!";
    print $in $opt{stdin} // '';
    close $in;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        eval {
            delete $ENV{PREFORK_INTERP};
            my %env = %{ $opt{env} // {} };
            for my $name (keys %env) {
                if (defined $env{$name}) { $ENV{$name} = $env{$name} } else { delete $ENV{$name} }
            }
            open(STDIN,  '<', $file{stdin})  or die "stdin: $!";
            open(STDOUT, '>', $file{stdout}) or die "stdout: $!";
            open(STDERR, '>', $file{stderr}) or die "stderr: $!";
            exec { $command->[0] } @$command or die "cannot run $command->[0]: $!\n";
        };
        print STDERR $@;
        POSIX::_exit(126);
    }
    waitpid($pid, 0) == $pid or die "waitpid: $!";
    my $wait = $?;
    my %out = (status => ($wait & 127 ? undef : $wait >> 8), signal => $wait & 127);
    for my $name (qw(stdout stderr)) {
        open(my $f, '<', $file{$name}) or die "$file{$name}: $!";
        local $/;
        $out{$name} = <$f> // '';
    }
    return \%out;
}

1;
