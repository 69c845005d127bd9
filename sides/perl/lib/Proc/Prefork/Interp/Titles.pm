package Proc::Prefork::Interp::Titles;

# Process titles: what /proc/PID/cmdline shows (perl writes $0 over the
# argv area, and the environment's after it, so the first caller's
# arguments go), and comm put back as exec left it, which an assignment
# to $0 also sets (PR_SET_NAME): a direct run shows the interpreter
# there.

use strict;
use warnings;

use Proc::Prefork::Interp::Sys;

our $VERSION = '0.1.0';

# The script's path as perl was given it ($script: the setup run's $0),
# and comm now.
sub new {
    my ($class, $script) = @_;
    # (In a block of its own: a handle opened in an `if`'s condition
    # stays open until the sub returns.)
    my $comm = do { my $f; open($f, '<', '/proc/self/comm') ? scalar <$f> : undef };
    chomp $comm if defined $comm;
    return bless { script => $script, comm => $comm }, $class;
}

sub script { return $_[0]{script} }

# "SCRIPT [ROLE]", or with no role the script's path. Never fatal.
sub set {
    my ($self, $role) = @_;
    my $title = defined $role ? "$self->{script} [$role]" : $self->{script};
    eval { $0 = $title; 1 } or return;
    set_comm($self->{comm}) if defined $self->{comm};
    return;
}

1;
