# Proc::Prefork::Interp::Run without a client: `perl
# -MProc::Prefork::Interp::Run PROGRAM` runs PROGRAM as perl would, and
# loads nothing more; and the scan that picks what to preload.
use strict;
use warnings;

BEGIN { delete $ENV{PREFORK_INTERP} }

use Test::More;
use lib 't/lib';
use PfiTest;

require Proc::Prefork::Interp::Run;

{
    # (perl_script's `use lib` line comes first; the program is unchanged.)
    my $program = perl_script(<<'EOS');
use strict;
print "argv=", join('|', @ARGV), "\n";
print "main module: ", ($INC{'Proc/Prefork/Interp.pm'} ? 'loaded' : 'not loaded'), "\n";
print "data=", scalar <DATA>;
exit 4;
__DATA__
the program's own DATA
EOS
    my $out = run_program([ $^X, '-w', '-I' . module_lib(), '-MProc::Prefork::Interp::Run', $program, 'a', 'b c' ]);
    is($out->{status}, 4, 'run directly: the program\'s exit status') or diag $out->{stderr};
    is($out->{stdout}, "argv=a|b c\nmain module: not loaded\ndata=the program's own DATA\n",
        'run directly: the program runs as perl runs it, with its @ARGV and DATA');
}

my ($modules, $lib) = Proc::Prefork::Interp::Run::_scan(<<'EOS');
#!/usr/bin/perl
use strict;
use warnings;
use lib 'lib/one', "lib/two";
use lib qw(lib/three lib/four);
use lib qw{lib/five} ;
use lib qw/lib-six lib.seven/;
use POSIX qw(floor);
  use Data::Dumper;
require JSON::PP;
    require Indented::Module;
use if $] > 5, 'Conditional';
use 5.010;
=head1 POD

use In::Pod;

=cut
use After::Pod ();
__END__
use After::End;
EOS
is_deeply($modules, [qw(POSIX Data::Dumper JSON::PP After::Pod)],
    'scan: modules of `use` lines and unindented `require` lines; no pragmas, POD or __END__');
is_deeply($lib, [qw(lib/one lib/two lib/three lib/four lib/five lib-six lib.seven)], 'scan: the literal directories of `use lib`, quoted or in qw with any delimiter');

done_testing;
