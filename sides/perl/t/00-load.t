# Loading: every module compiles, they agree on their version, and the
# main module exports exactly its two functions (and nothing with an
# empty import list).
use strict;
use warnings;

BEGIN { delete $ENV{PREFORK_INTERP} }    # never a server here

use Test::More;

use_ok('Proc::Prefork::Interp');
require_ok('Proc::Prefork::Interp::Run');

like($Proc::Prefork::Interp::VERSION, qr/\A[0-9]+\.[0-9]+\.[0-9]+\z/, 'a three-part $VERSION');
is($Proc::Prefork::Interp::Run::VERSION, $Proc::Prefork::Interp::VERSION,
    'Run.pm has the same $VERSION');
# The modules of the roles (each a file under lib/Proc/Prefork/Interp/).
for my $role (qw(Wire Sys InitEnv Titles Reload Log HugePages Setup Server Monitor Executor
    Keeper FastExit))
{
    my $module = "Proc::Prefork::Interp::$role";
    require_ok($module);
    is($module->VERSION, $Proc::Prefork::Interp::VERSION, "$module has the same \$VERSION");
}

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
