# What the module does without a prefork-interp client: a script run
# directly (`perl script`) goes on past prefork_initialisation_complete
# as a normal run; %ENV is a recording stand-in until then; fast_exit
# applies to a direct run too.
use strict;
use warnings;

BEGIN { delete $ENV{PREFORK_INTERP} }

use Test::More;
use lib 't/lib';
use PfiTest;

sub perl_run {
    my ($text, $args, %opt) = @_;
    return run_program([ $^X, '-w', perl_script($text), @$args ], %opt);
}

{
    my $out = perl_run(<<'EOS', [ 'one', 'two words', '' ], stdin => "line\n");
use Proc::Prefork::Interp;
print "before\n";
my @got = prefork_initialisation_complete(max_servers => 2, idle_timeout => 5);
print "returned ", scalar(@got), " values\n";
print "argv=", join('|', @ARGV), "\n";
print "in=", scalar <STDIN>;
print "zero=", ($0 =~ m{/[^/]+\.pl\z} ? 'script' : $0), "\n";
exit 3;
EOS
    is($out->{status}, 3, 'direct run: the script\'s exit status');
    is($out->{stdout}, "before\nreturned 0 values\nargv=one|two words|\nin=line\nzero=script\n",
        'direct run: prefork_initialisation_complete returns and the script goes on with its @ARGV, STDIN, $0');
    is($out->{stderr}, '', 'direct run: nothing on stderr');
}

{
    my $out = perl_run(<<'EOS', [], env => { PFI_T_EXISTING => 'old' });
use Proc::Prefork::Interp;
print 'loaded: ', ref(tied %ENV) || 'plain', "\n";
$ENV{PFI_T_SET} = 'new value';
delete $ENV{PFI_T_EXISTING};
system('sh', '-c', 'echo "child: ${PFI_T_SET-unset} ${PFI_T_EXISTING-unset}"') == 0 or die;
prefork_initialisation_complete();
print 'after: ', ref(tied %ENV) || 'plain', " $ENV{PFI_T_SET}\n";
EOS
    is($out->{status}, 0, '%ENV: exit status') or diag $out->{stderr};
    is($out->{stdout},
        "loaded: Proc::Prefork::Interp::TrackedEnv\nchild: new value unset\nafter: plain new value\n",
        '%ENV: a stand-in from loading to prefork_initialisation_complete that passes writes on, the real one after');
}

{
    my $out = perl_run(<<'EOS', []);
use Proc::Prefork::Interp;
my @got = prefork_autoreload_also_check('/nonexistent/file', $0);
print scalar(@got), "\n";
EOS
    is_deeply([ $out->{status}, $out->{stdout} ], [ 0, "0\n" ],
        'prefork_autoreload_also_check takes paths (missing ones too) and returns nothing');
}

# fast_exit: END blocks run, every output handle is flushed, the status
# is exact; global destruction (DESTROY of objects alive at exit) is
# skipped, scoped objects are destroyed as usual. Without the option
# the global object's DESTROY runs: the comparison shows the test can tell.
my $fast_exit_script = <<'EOS';
use Proc::Prefork::Interp;
package Noisy;
sub new { my ($c, $n) = @_; bless { n => $n }, $c }
sub DESTROY { print "destroy $_[0]{n}\n" }
package main;
our $global = Noisy->new('global');
END { print "end\n" }
prefork_initialisation_complete(fast_exit => !!$ARGV[0]);
{ my $scoped = Noisy->new('scoped'); }
open(my $extra, '>', $ARGV[1]) or die;
print $extra 'extra handle, unflushed';
print 'stdout, unflushed';
if ($ARGV[2] eq 'die') { $! = 0; die "dying\n" }    # ($!, if set, would be the status)
exit $ARGV[2];
EOS
for my $fast (1, 0) {
    my $name = $fast ? 'fast_exit' : 'without fast_exit';
    my $file = File::Temp->new;
    my $out = perl_run($fast_exit_script, [ $fast, "$file", 5 ]);
    is($out->{status}, 5, "$name: exit status");
    my $tail = $fast ? '' : "destroy global\n";
    is($out->{stdout}, "destroy scoped\nstdout, unflushedend\n$tail", "$name: END, flushes, destruction");
    open(my $f, '<', "$file") or die;
    is(do { local $/; <$f> }, 'extra handle, unflushed', "$name: another output handle flushed");
}
for my $fast (1, 0) {
    my $name = $fast ? 'fast_exit' : 'without fast_exit';
    my $file = File::Temp->new;
    my $out = perl_run($fast_exit_script, [ $fast, "$file", 'die' ]);
    is_deeply([ $out->{status}, $out->{stderr} ], [ 255, "dying\n" ], "$name: die is 255, message kept");
    my $tail = $fast ? '' : "destroy global\n";
    is($out->{stdout}, "destroy scoped\nstdout, unflushedend\n$tail", "$name: die runs END and flushes");
}

done_testing;
