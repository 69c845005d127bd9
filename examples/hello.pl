#!/usr/local/bin/prefork-interp -U,perl,-w
# A Perl script under prefork-interp: the `use` lines are paid for once,
# by the server; each call runs from prefork_initialisation_complete on,
# in a fresh fork, with the caller's @ARGV, %ENV and STDIN/STDOUT/STDERR.
use strict;
use Proc::Prefork::Interp;
use Data::Dumper ();
use JSON::PP ();
use POSIX ();

prefork_initialisation_complete();

my $name = $ARGV[0] // 'world';
print JSON::PP->new->canonical->encode({ hello => $name, pid => $$ }), "\n";
exit(@ARGV > 1 ? $ARGV[1] : 0);
