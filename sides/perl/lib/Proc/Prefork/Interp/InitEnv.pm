package Proc::Prefork::Interp::InitEnv;

# The environment from the interpreter's start to the end of
# initialisation (as the Rust side's src/script/init_env.rs): the
# exec-time environment, the names initialisation reads (the greeting's
# env line), and what initialisation did to %ENV, laid over each call's
# environment.

use strict;
use warnings;

use Proc::Prefork::Interp::Wire;

our $VERSION = '0.1.0';

# Takes the snapshot and starts tracking, once; returns the tracker.
# First called either as perl starts, before any of the script's code:
# a client starting a server gives perl the argument
#
#   -M5;BEGIN{local($!,$@);eval{require Proc::Prefork::Interp::InitEnv;
#   Proc::Prefork::Interp::InitEnv->start}}
#
# (one word; `use 5` is a no-op, and where this module is not in perl's
# own @INC the request does nothing, leaving $! and $@ as they were),
# so that BEGIN blocks and `use` lines above ours are tracked too; or
# else when Proc::Prefork::Interp loads.
#
# The environment as exec left it: the kernel's copy, /proc/self/environ,
# which %ENV changes never touch. Read now, because an assignment to $0
# overwrites that copy (perl reuses its memory for the new name). Undef,
# with the reason, if unreadable.
#
# The names of the variables initialisation reads, from now until
# untrack: %ENV is a stand-in meanwhile, a tied hash
# (Proc::Prefork::Interp::TrackedEnv) that records FETCH and EXISTS and
# passes everything on to the real %ENV, whose magic keeps C's environ
# (system's children) in step. (Not under taint checks, which look at
# the real %ENV's values.)
my $STARTED;

sub start {
    my ($class) = @_;
    return $STARTED //= $class->_begin;
}

sub _begin {
    my ($class) = @_;
    my $self = bless { read => {} }, $class;
    if (open my $f, '<:raw', '/proc/self/environ') {
        local $/;
        $self->{environ} = <$f> // '';
    } else {
        $self->{environ_error} = "$!";
    }
    if (!${^TAINT}) {
        $self->{real_env} = \%ENV;
        tie my %tracked, 'Proc::Prefork::Interp::TrackedEnv', $self->{real_env}, $self->{read};
        *main::ENV = \%tracked;
    }
    return $self;
}

# A variable's value, read without noting it (for the runner's own
# settings, which pick what to preload, not what the program does).
sub untracked {
    my ($self, $name) = @_;
    return $self->{real_env} ? $self->{real_env}{$name} : $ENV{$name};
}

# The real %ENV back; the end of tracking.
sub untrack {
    my ($self) = @_;
    *main::ENV = $self->{real_env} if $self->{real_env};
    delete $self->{real_env};
    return;
}

# The environment at exec: {NAME => VALUE}, and the names in order. As
# getenv: the first of two entries with one name counts.
sub exec_environ {
    my ($self) = @_;
    die "prefork-interp: cannot read /proc/self/environ: $self->{environ_error}\n"
        unless defined $self->{environ};
    my (%before, @order);
    for my $entry (split /\0/, $self->{environ}) {
        next unless $entry =~ /\A(.[^=]*)=(.*)\z/s && !exists $before{$1};
        $before{$1} = $2;
        push @order, $1;
    }
    return (\%before, \@order);
}

# The greeting's env dependency: the names initialisation read (without
# ours, and those a line cannot carry) with their exec-time values, as a
# client computes it from its own ({digest, names}; undef if none).
sub dependency {
    my ($self) = @_;
    my $initial;
    return env_dependency([ keys %{ $self->{read} } ], sub {
        ($initial) = $self->exec_environ unless $initial;
        return $initial->{ $_[0] };
    });
}

# What perl reads of its environment as it starts, before any of the
# script's code (its options, @INC, hash seed, PerlIO layers, Unicode
# switches, the locale it sets from the environment): inputs of the
# initialisation as surely as a variable the script reads, so every
# server's greeting names them (its `start` line), and a caller whose
# values differ gets a server started with its own. The one list of this
# side; tests/perl.rs holds it to perlrun's ENVIRONMENT, each variable
# there being in it or named there with the reason it is not.
use constant INTERPRETER_VARIABLES => qw(
    PERL5LIB PERLLIB PERL5OPT PERLIO PERLIO_DEBUG PERL5DB PERL5DB_THREADED
    PERL_DEBUG_MSTATS PERL_DESTRUCT_LEVEL PERL_HASH_SEED PERL_PERTURB_KEYS
    PERL_HASH_SEED_DEBUG PERL_MEM_LOG PERL_SIGNALS PERL_UNICODE PERL_USE_UNSAFE_INC
    PERL_INTERNAL_RAND_SEED PERL_RAND_SEED PERL_BADLANG PERL_SKIP_LOCALE_INIT
    LC_ALL LC_CTYPE LC_COLLATE LC_NUMERIC LC_MESSAGES LC_MONETARY LC_TIME
    LC_ADDRESS LC_IDENTIFICATION LC_MEASUREMENT LC_NAME LC_PAPER LC_TELEPHONE LANG
);

# The greeting's start dependency: INTERPRETER_VARIABLES with their
# exec-time values ({digest, names}).
sub start_dependency {
    my ($self) = @_;
    my ($initial) = $self->exec_environ;
    return env_dependency([INTERPRETER_VARIABLES], sub { $initial->{ $_[0] } });
}

# What the script's start-up did to its environment: %ENV against the
# exec-time environment, [NAME, VALUE] set or changed, [NAME] removed.
# PREFORK_INTERP, ours, is left out.
sub changes {
    my ($self) = @_;
    my ($before, $order) = $self->exec_environ;
    my @changes;
    for my $name (sort keys %ENV) {
        next if $name eq ENV_VAR;
        push @changes, [ $name, $ENV{$name} ]
            unless defined $before->{$name} && $before->{$name} eq $ENV{$name};
    }
    push @changes, map { [$_] } grep { $_ ne ENV_VAR && !exists $ENV{$_} } @$order;
    return \@changes;
}

# A call's environment: its entries (NAME=VALUE), then @$changes over
# them, as in a direct run.
sub lay_over {
    my ($entries, $changes) = @_;
    %ENV = ();
    for my $entry (@$entries) {
        # A name holding '=' cannot be set; only a hand-made environment
        # has one.
        my ($name, $value) = split_env_entry($entry) or next;
        $ENV{$name} = $value unless $name =~ /=/;
    }
    for my $change (@$changes) {
        my ($name, $value) = @$change;
        if (@$change > 1) {
            $ENV{$name} = $value;
        } else {
            delete $ENV{$name};
        }
    }
    return;
}

{
    # The stand-in %ENV. Iteration is not recorded: it would make every
    # variable a dependency. A copy or `values` of a tied hash fetches
    # each key after iterating; those fetches (of a key the iteration
    # returned, from the statement that iterated) are iteration too.
    package Proc::Prefork::Interp::TrackedEnv;

    sub TIEHASH {
        my ($class, $real, $read) = @_;
        # iterated: keys the last iteration returned, and where (at).
        return bless { real => $real, read => $read, iterated => {}, at => '' }, $class;
    }

    sub _read {
        my ($self, $name, $at) = @_;
        $self->{read}{$name} = 1 unless delete $self->{iterated}{$name} && $at eq $self->{at};
        return;
    }

    sub _iterated {
        my ($self, $key) = @_;
        $self->{iterated}{$key} = 1 if defined $key;
        return $key;
    }

    sub FETCH  { $_[0]->_read($_[1], join ':', (caller 0)[1, 2]); return $_[0]{real}{ $_[1] } }
    sub EXISTS { $_[0]->_read($_[1], join ':', (caller 0)[1, 2]); return exists $_[0]{real}{ $_[1] } }
    sub STORE  { $_[0]{real}{ $_[1] } = $_[2]; return }
    sub DELETE { return delete $_[0]{real}{ $_[1] } }
    sub CLEAR  { %{ $_[0]{real} } = (); return }
    sub FIRSTKEY {
        my ($self) = @_;
        $self->{iterated} = {};
        $self->{at} = join ':', (caller 0)[1, 2];
        keys %{ $self->{real} };
        return $self->_iterated(each %{ $self->{real} });
    }
    sub NEXTKEY { return $_[0]->_iterated(each %{ $_[0]{real} }) }
    sub SCALAR  { return scalar %{ $_[0]{real} } }
}

1;
