# Through a real prefork-interp client (this project's: the one named by
# PREFORK_INTERP_CLIENT, else `prefork-interp` on PATH): a script using
# the module under test, called cold (the call starts the server) and
# warm (a fork of it): its @ARGV, STDIN, %ENV, stdout, stderr and exit
# status are each call's own, and the initialisation ran once. Skipped
# only when no client is found. The calls use a run directory of their
# own (XDG_RUNTIME_DIR), and the server is killed at the end.
use strict;
use warnings;

BEGIN { delete $ENV{PREFORK_INTERP} }

use Cwd ();
use File::Spec ();
use File::Temp ();
use Test::More;
use lib 't/lib';
use PfiTest;

# The client, and whether it is this project's (it says its version;
# chiark-utils' prefork-interp does not, and keeps its sockets in
# /var/run/user/UID or HOME, where a test must not start servers).
sub find_client {
    my $named = $ENV{PREFORK_INTERP_CLIENT};
    if (defined $named && length $named) {
        # (Relative: to the directory make test runs in.)
        return (Cwd::abs_path($named) // $named, 'PREFORK_INTERP_CLIENT');
    }
    for my $dir (File::Spec->path) {
        my $path = File::Spec->catfile($dir, 'prefork-interp');
        return ($path, 'PATH') if -f $path && -x _;
    }
    return;
}

my ($client, $from) = find_client();
plan skip_all => 'no prefork-interp client: set PREFORK_INTERP_CLIENT, or put prefork-interp on PATH'
    unless defined $client;
my $version = run_program([ $client, '--version' ]);
my $ours = ($version->{status} // -1) == 0 && $version->{stdout} =~ /\Aprefork-interp [0-9]/;
if (!$ours) {
    if ($from eq 'PATH') {
        plan skip_all => "$client (from PATH) is not this project's client (no --version): "
            . 'set PREFORK_INTERP_CLIENT';
    }
    BAIL_OUT("PREFORK_INTERP_CLIENT=$client is not this project's prefork-interp: "
        . "--version said: $version->{stdout}$version->{stderr}");
}
note "client: $client ($from), $version->{stdout}";

my $dir = File::Temp->newdir;
my $run = "$dir/run";
mkdir $run, 0700 or die "$run: $!";
my $inits = "$dir/inits";
my @interpreter = ("-U,$^X,-w");
my $body = <<"EOS";
use strict;
use Proc::Prefork::Interp;
open(my \$inits, '>>', '$inits') or die "$inits: \$!";
print \$inits "\$\$\\n";
close \$inits;
prefork_initialisation_complete(idle_timeout => 300);
EOS
$body .= <<'EOS';
print "argv=", join('|', @ARGV), "\n";
my $line = <STDIN>;
print "in=", $line // "EOF\n";
print "env=", $ENV{PFI_T_CALL} // 'unset', "\n";
print "pid=$$\n";
if ($ARGV[0] eq 'die') { $! = 0; die "died in the call\n" }
exit $ARGV[-1];
EOS
# A real #! line, as a user writes it (the kernel passes "-U,PERL,-w" as
# one argument); the explicit form, without a #! line, if it would be too
# long for the kernel, or if the client's path holds "perl" (perl reads
# the #! line again, and takes the switches after the first "perl" in it
# for its own).
my $first = "#!$client @interpreter\n";
my $shebang = length $first < 200 && $client !~ /perl/;
my $script = perl_script($body, dir => $dir, first_line => $shebang ? $first : '');
my @call = $shebang ? ($script) : ($client, @interpreter, $script);

my %env = (XDG_RUNTIME_DIR => $run);
sub call {
    my ($args, %opt) = @_;
    return run_program([ @call, @$args ], env => { %env, %{ $opt{env} // {} } }, stdin => $opt{stdin});
}
sub init_pids {
    open(my $f, '<', $inits) or return ();
    return map { chomp; $_ } <$f>;
}
sub pid_of { $_[0]{stdout} =~ /^pid=([0-9]+)$/m ? $1 : undef }

my $cold = call([ 'cold', 'two words', '', 3 ], stdin => "first line\n", env => { PFI_T_CALL => 'one' });
is($cold->{status}, 3, 'cold call: the exit status') or diag $cold->{stderr};
like($cold->{stdout}, qr/\Aargv=cold\|two words\|\|3\nin=first line\nenv=one\npid=[0-9]+\n\z/,
    'cold call: @ARGV exact, STDIN, %ENV and STDOUT the caller\'s');
is($cold->{stderr}, '', 'cold call: nothing on stderr');
my @init = init_pids();
is(scalar @init, 1, 'the cold call initialised the script');

my $warm = call([ 'warm', 0 ], stdin => "second line\n", env => { PFI_T_CALL => 'two' });
is($warm->{status}, 0, 'warm call: the exit status') or diag $warm->{stderr};
like($warm->{stdout}, qr/\Aargv=warm\|0\nin=second line\nenv=two\npid=[0-9]+\n\z/,
    'warm call: its own @ARGV, STDIN, %ENV and STDOUT');

my $died = call([ 'die', 7 ], env => { PFI_T_CALL => undef });
is($died->{status}, 255, 'a call that dies: 255');
is($died->{stderr}, "died in the call\n", 'a call that dies: its message on the caller\'s stderr');
like($died->{stdout}, qr/\Aargv=die\|7\nin=EOF\nenv=unset\npid=[0-9]+\n\z/,
    'a call that dies: its output before that, empty STDIN, a variable the caller lacks');

is_deeply([ init_pids() ], \@init, 'warm calls: the initialisation ran once');
my %pids = map { (pid_of($_) // 'none') => 1 } $cold, $warm, $died;
is(scalar(grep { /\A[0-9]+\z/ } keys %pids), 3, 'each call ran in a process of its own');
ok(!$pids{ $init[0] // '' }, 'no call ran in the process that initialised');

my $listed = run_program([ $client, '--list' ], env => \%env);
my ($server, $served) = $listed->{stdout} =~ /^\S+\s+([0-9]+)\s+\S+\s+([0-9]+)\s.*\Q$script\E \[server\]$/m;
is($served, 3, 'one server listed for the script, which served the three calls')
    or diag $listed->{stdout}, $listed->{stderr};

my $killed = run_program([ $client, '--kill', @interpreter, $script ], env => \%env);
is($killed->{status}, 0, '--kill tears the server down') or diag $killed->{stderr};
if ($server) {
    my $gone = 0;
    for (1 .. 100) {
        last if ($gone = !kill(0, $server));
        select(undef, undef, undef, 0.05);
    }
    ok($gone, 'the server is gone');
}

done_testing;
