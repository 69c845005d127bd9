# Loading: both modules compile, agree on their version, and the main
# module exports exactly its two functions (and nothing with an empty
# import list).
use strict;
use warnings;

BEGIN { delete $ENV{PREFORK_INTERP} }    # never a server here

use Test::More;

use_ok('Proc::Prefork::Interp');
require_ok('Proc::Prefork::Interp::Run');

like($Proc::Prefork::Interp::VERSION, qr/\A[0-9]+\.[0-9]+\.[0-9]+\z/, 'a three-part $VERSION');
is($Proc::Prefork::Interp::Run::VERSION, $Proc::Prefork::Interp::VERSION,
    'Run.pm has the same $VERSION');

is_deeply([ sort @Proc::Prefork::Interp::EXPORT ],
    [qw(prefork_autoreload_also_check prefork_initialisation_complete)],
    '@EXPORT is the two functions');
ok(main->can($_), "$_ imported") for qw(prefork_initialisation_complete prefork_autoreload_also_check);

{
    package Empty::Import;
    Proc::Prefork::Interp->import();
    package No::Import;
    eval 'use Proc::Prefork::Interp (); 1' or die $@;
}
ok(Empty::Import->can('prefork_initialisation_complete'), 'import() exports');
ok(!No::Import->can('prefork_initialisation_complete'), 'use ... () exports nothing');

done_testing;
