# prefork_initialisation_complete's checks: a malformed PREFORK_INTERP
# (what a client sets) and bad options die with a message naming the
# problem (and the script can catch it), before anything is forked.
use strict;
use warnings;

BEGIN { delete $ENV{PREFORK_INTERP} }

use Test::More;
use lib 't/lib';
use PfiTest;

# The script sets PREFORK_INTERP itself: FDS (if any) are replaced by the
# numbers of four open handles on /dev/null.
my $script = perl_script(<<'EOS');
use Proc::Prefork::Interp;
my ($setup, @options) = @ARGV;
my @null = map { open(my $h, '+<', '/dev/null') or die; $h } 1 .. 4;
my $fds = join ',', map { fileno $_ } @null;
$setup =~ s/FDS/$fds/;
$ENV{PREFORK_INTERP} = $setup;
if (eval { prefork_initialisation_complete(@options, idle_timeout => 1); 1 }) {
    print "returned\n";
} else {
    print "died: $@";
}
EOS

my $good = 'v1,1700000000.123456789 FDS';
my @cases = (
    [ ['garbage'], 'bad PREFORK_INTERP: expected two words' ],
    [ ['v2,1700000000.123456789 FDS'], 'bad PREFORK_INTERP: unsupported version v2 (expected v1)' ],
    [ ['v1,1700000000.5 FDS'],
        'bad PREFORK_INTERP: start time must be SECS.NSECS with 9 digits of nanoseconds' ],
    [ ['v1,1700000000.123456789 3,4,x,6'],
        'bad PREFORK_INTERP: file descriptors must be four non-negative numbers' ],
    [ ['v1,1700000000.123456789 3,4,5'],
        'bad PREFORK_INTERP: file descriptors must be four non-negative numbers' ],
    [ ['v1,1700000000.123456789 900,901,902,903'], 'PREFORK_INTERP names fd 900, which is not open' ],
    [ ['v1,1700000000.123456789 0,1,2,3'], 'PREFORK_INTERP names fd 0, which is not open' ],
    [ [ $good, max_servers => 0 ], 'max_servers must not be 0 (negative for no limit)' ],
    [ [ $good, spare_handlers => 0 ], 'spare_handlers must be at least 1' ],
);
for my $case (@cases) {
    my ($args, $message) = @$case;
    my $out = run_program([ $^X, '-w', $script, @$args ]);
    is_deeply([ $out->{status}, $out->{stdout}, $out->{stderr} ],
        [ 0, "died: prefork-interp: $message\n", '' ], "@$args: $message");
}

done_testing;
