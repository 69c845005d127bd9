# The wire vectors (sides/wire-vectors.json, here through the symlink
# t/wire-vectors.json; PFI_WIRE_VECTORS=PATH reads another copy) against
# Proc::Prefork::Interp::Wire: every group the Perl side's codec has,
# decoded and encoded, valid and error vectors ('decode_only' ones
# decoded only). A group neither tested here nor in %LEFT_TO_OTHERS
# fails: a new message is handled here before this passes again.
use strict;
use warnings;

use File::Basename ();
use File::Spec ();
use IO::FDPass;
use JSON::PP ();
use POSIX ();
use Socket qw(AF_UNIX PF_UNSPEC SOCK_STREAM);
use Test::More;

use Proc::Prefork::Interp::Wire;

# Groups the Perl side has no codec for, and why.
my %LEFT_TO_OTHERS = (
    greeting_header       => 'the client decodes the greeting',
    greeting_xdata_decode => 'the client decodes the greeting',
);

my %TESTS = (
    greeting          => \&greeting,
    greeting_xdata    => \&greeting_xdata,
    env_dependency    => \&env_dependency_group,
    world_digest      => \&world_digest_group,
    setup_env         => \&setup_env,
    request           => \&request,
    payload           => \&payload,
    payload_len       => \&payload_len,
    context_umask     => \&context_umask,
    limits            => \&limits,
    caller_signals    => \&caller_signals,
    status            => \&status,
    frame             => \&frame,
    terminal_settings => \&terminal_settings,
    restore           => \&restore,
    executor_ready    => \&executor_ready,
    monitor_to_server => \&monitor_to_server,
    quit_line         => \&quit_line,
    last_quit         => \&last_quit,
    env_entry         => \&env_entry,
    hand_over         => \&hand_over,
);

my $path = $ENV{PFI_WIRE_VECTORS}
    // File::Spec->catfile(File::Basename::dirname(__FILE__), 'wire-vectors.json');
my $all = do {
    open(my $f, '<:raw', $path) or die "cannot open $path: $!\n";
    local $/;
    JSON::PP->new->decode(scalar <$f>);
};

for my $group (sort grep { $_ ne 'about' } keys %$all) {
    if ($TESTS{$group}) {
        ok(!$LEFT_TO_OTHERS{$group}, "$group: tested, so not left to others");
        subtest $group => sub { $TESTS{$group}->(@{ $all->{$group}{vectors} }) };
    } elsif ($LEFT_TO_OTHERS{$group}) {
        note("$group: left to others ($LEFT_TO_OTHERS{$group})");
    } else {
        fail("$group: a group this test neither checks nor leaves to others");
    }
}
for my $group (sort keys %TESTS, keys %LEFT_TO_OTHERS) {
    ok($all->{$group}, "$group: in the vector file");
}
done_testing;

# ------------------------------------------------------------- helpers

sub unhex { return pack 'H*', $_[0] }

# The error a decoder died with, its kind checked.
sub dies_with {
    my ($kind, $name, $code) = @_;
    my $error = eval { $code->(); 1 } ? undef : $@;
    isa_ok($error, 'Proc::Prefork::Interp::Wire::Error', "$name: the error");
    return unless ref $error;
    is($error->kind, $kind, "$name: kind");
    like("$error", qr/\A[^\n]+\n\z/, "$name: reads as one line");
    return;
}

# A request kind with 0/1 for the vectors' booleans.
sub plain_kind {
    my ($kind) = @_;
    return { map {
        my $v = $kind->{$_};
        ($_ => ref $v eq 'ARRAY' ? [ map { $_ ? 1 : 0 } @$v ] : $v ? 1 : 0)
    } keys %$kind };
}

# ------------------------------------------------------------- groups

sub greeting {
    for my $v (@_) {
        is(unpack('H*', encode_greeting(unhex $v->{xdata})), $v->{bytes}, "$v->{name}: encode");
    }
}

sub greeting_xdata {
    # A server offers OUR_CAPS (those its client speaks) in this order:
    # the vectors' fullest offer is all of them.
    my ($fullest) = sort { @{ $b->{offered} } <=> @{ $a->{offered} } } @_;
    is_deeply([OUR_CAPS], $fullest->{offered}, 'OUR_CAPS: the fullest offer, in its order');
    for my $v (@_) {
        my ($env, $start) = map {
            $v->{$_} && { digest => $v->{$_}{digest}, names => [ map { unhex $_ } @{ $v->{$_}{names} } ] }
        } qw(env start);
        my $x = encode_greeting_xdata($v->{offered}, $v->{world}, $env, $start, $v->{terminals},
            $v->{degraded}, { map { ($_ => $v->{$_}) } qw(served running idle_ms) });
        is(unpack('H*', $x), $v->{bytes}, "$v->{name}: encode");
    }
}

sub env_dependency_group {
    for my $v (@_) {
        my %values;
        for my $pair (@{ $v->{values} }) {
            $values{ unhex $pair->[0] } = defined $pair->[1] ? unhex $pair->[1] : undef;
        }
        my $got = env_dependency([ map { unhex $_ } @{ $v->{names} } ], sub { $values{ $_[0] } });
        my $want = $v->{dependency}
            && { digest => $v->{dependency}{digest},
                 names  => [ map { unhex $_ } @{ $v->{dependency}{names} } ] };
        is_deeply($got, $want, "$v->{name}: dependency");
    }
}

sub world_digest_group {
    for my $v (@_) {
        is(world_digest($v->{namespaces}, unhex $v->{cgroups}), $v->{digest}, "$v->{name}: digest");
    }
}

sub setup_env {
    for my $v (@_) {
        if ($v->{error}) {
            dies_with($v->{error}, $v->{name}, sub { decode_setup_env($v->{value}) });
            next;
        }
        my $s = decode_setup_env($v->{value});
        is_deeply(
            [ @$s{qw(started_secs started_nsecs)}, [ @$s{qw(listen call watch_in watch_err)} ],
                @$s{qw(client_caps idle_limit keeper)} ],
            [ @$v{qw(started_secs started_nsecs fds client_caps idle_limit keeper)} ],
            "$v->{name}: decode");
    }
}

# The request byte, and the second byte if the first says so: the kind.
sub decode_request {
    my ($bytes) = @_;
    my @bytes = unpack 'C*', $bytes;
    my $kind = check_request_byte($bytes[0]);
    check_second_request_byte($kind, $bytes[1]) if has_second_request_byte($bytes[0]);
    die "left over\n" if @bytes != 1 + has_second_request_byte($bytes[0]);
    return $kind;
}

sub request {
    for my $v (@_) {
        my $bytes = unhex $v->{bytes};
        if ($v->{error}) {
            dies_with($v->{error}, $v->{name}, sub { decode_request($bytes) });
            next;
        }
        is_deeply(plain_kind(decode_request($bytes)), plain_kind($v->{kind}), "$v->{name}: decode");
        next if $v->{decode_only};
        is(unpack('H*', encode_request_bytes(plain_kind($v->{kind}))), $v->{bytes},
            "$v->{name}: encode");
    }
}

sub payload {
    for my $v (@_) {
        my $bytes = unhex $v->{bytes};
        if ($v->{error}) {
            dies_with($v->{error}, $v->{name}, sub { decode_payload($bytes) });
            next;
        }
        is_deeply(decode_payload($bytes),
            { env => [ map { unhex $_ } @{ $v->{env} } ], args => [ map { unhex $_ } @{ $v->{args} } ] },
            "$v->{name}: decode");
    }
}

sub payload_len {
    for my $v (@_) {
        my $bytes = unhex $v->{bytes};
        if ($v->{error}) {
            dies_with($v->{error}, $v->{name}, sub { decode_payload_len($bytes) });
            next;
        }
        is(decode_payload_len($bytes), $v->{len}, "$v->{name}: decode");
    }
}

sub context_umask {
    for my $v (@_) {
        is(decode_context_umask(unhex $v->{bytes}), $v->{umask}, "$v->{name}: decode");
        is(unpack('H*', encode_context_umask($v->{umask})), $v->{bytes}, "$v->{name}: encode");
    }
}

sub limits {
    for my $v (@_) {
        my ($n, $body) = unpack 'C a*', unhex $v->{bytes};
        if ($v->{error}) {
            dies_with($v->{error}, $v->{name}, sub { decode_limits($n, $body) });
            next;
        }
        my $got = decode_limits($n, $body);
        is_deeply([ map { [ map {"$_"} @$_ ] } @{ $got->{rlimits} } ],
            [ map { [ map {"$_"} @$_ ] } @{ $v->{rlimits} } ], "$v->{name}: rlimits");
        is($got->{nice}, $v->{nice}, "$v->{name}: nice");
        is($got->{oom_score_adj}, $v->{oom_score_adj}, "$v->{name}: oom_score_adj");
    }
}

sub caller_signals {
    for my $v (@_) {
        my $want = { ignored => $v->{ignored}, blocked => $v->{blocked} };
        is_deeply(decode_caller_signals(unhex $v->{bytes}), $want, "$v->{name}: decode");
        is(unpack('H*', encode_caller_signals($want)), $v->{bytes}, "$v->{name}: encode");
    }
}

sub status {
    for my $v (@_) {
        is(decode_status(unhex $v->{bytes}), $v->{wait_status}, "$v->{name}: decode");
        is(unpack('H*', encode_status($v->{wait_status})), $v->{bytes}, "$v->{name}: encode");
    }
}

sub frame {
    # Every kind in the vectors is one of ours: a new kind is named here
    # (and so in Wire) before this passes again.
    my %ours = map { ($_ => 1) } FRAME_SIGNAL, FRAME_EXECUTOR_PID, FRAME_STATUS,
        FRAME_FOREGROUND, FRAME_STOPPED, FRAME_RESTORE, KEEPER_STOPPED, KEEPER_STATUS,
        KEEPER_FOREGROUND;
    for my $v (@_) {
        ok($ours{ $v->{kind} }, "$v->{name}: a kind of ours ($v->{kind})");
        is_deeply([ decode_frame(unhex $v->{bytes}) ], [ $v->{kind}, $v->{value} ],
            "$v->{name}: decode");
        is(unpack('H*', encode_frame($v->{kind}, $v->{value})), $v->{bytes}, "$v->{name}: encode");
    }
}

sub terminal_settings {
    for my $v (@_) {
        my $bytes = unhex $v->{bytes};
        if ($v->{error}) {
            dies_with($v->{error}, $v->{name}, sub { decode_terminal_settings($bytes) });
            # The monitor's check before it reads: the same refusal.
            dies_with($v->{error}, "$v->{name} (length alone)",
                sub { check_terminal_settings_len(length $bytes) });
            # The message the Rust side's ProtocolError gives.
            eval { decode_terminal_settings($bytes) };
            is("$@", sprintf("terminal settings of %d bytes (24 to 88)\n", length $bytes),
                "$v->{name}: the message");
            next;
        }
        my $want = { map { ($_ => $v->{$_}) } qw(iflag oflag cflag lflag ispeed ospeed cc) };
        is_deeply(decode_terminal_settings($bytes), $want, "$v->{name}: decode");
        is(unpack('H*', encode_terminal_settings($want)), $v->{bytes}, "$v->{name}: encode");
        ok(eval { check_terminal_settings_len(length $bytes); 1 },
            "$v->{name}: its length passes the monitor's check");
    }
}

sub restore {
    my $fields = sub { my ($f) = @_; +{ map { ($_ => $f->{$_}) } qw(iflag oflag cflag lflag ispeed ospeed cc) } };
    for my $v (@_) {
        my $bytes = unhex $v->{bytes};
        if ($v->{error}) {
            dies_with($v->{error}, $v->{name}, sub { decode_restore($bytes) });
            # The message the Rust side's ProtocolError gives.
            eval { decode_restore($bytes) };
            is("$@", sprintf("terminal restore message of %d bytes (a count C, then twice 24 + C, "
                    . "C at most 64)\n", length $bytes), "$v->{name}: the message");
            next;
        }
        my ($put_back, $left) = ($fields->($v->{put_back}), $fields->($v->{left}));
        is_deeply([ decode_restore($bytes) ], [ $put_back, $left ], "$v->{name}: decode");
        is(unpack('H*', encode_restore($put_back, $left)), $v->{bytes}, "$v->{name}: encode");
        ok(eval { check_restore_len(length $bytes); 1 },
            "$v->{name}: its length passes the monitor's check");
    }
    dies_with('BadRestore', 'a wild length', sub { check_restore_len(1 << 30) });
}

sub executor_ready {
    for my $v (@_) {
        my $bytes = unhex $v->{bytes};
        if ($v->{error}) {
            dies_with($v->{error}, $v->{name}, sub { decode_executor_ready($bytes) });
            next;
        }
        my $kind = decode_executor_ready(substr $bytes, 0, 2);
        is_deeply(plain_kind($kind), plain_kind($v->{kind}), "$v->{name}: decode");
        my $rest = substr $bytes, 2;
        is(length $rest ? unpack('N', $rest) : undef, $v->{script_pid},
            "$v->{name}: the script's pid when on a pty of its own");
        is(length $rest ? 4 : 0, on_pty($kind) ? 4 : 0, "$v->{name}: a pid exactly on a pty");
        next if $v->{decode_only};
        is(unpack('H*', encode_executor_ready(plain_kind($v->{kind}), $v->{script_pid} // 0)),
            $v->{bytes}, "$v->{name}: encode");
    }
}

sub monitor_to_server {
    my %byte = (call_ended => MONITOR_CALL_ENDED, call_dropped => MONITOR_CALL_DROPPED);
    for my $v (@_) {
        ok(exists $byte{ $v->{message} }, "$v->{name}: a message we know");
        is(unpack('H*', $byte{ $v->{message} } // ''), $v->{bytes}, "$v->{name}: its byte");
    }
}

sub quit_line {
    for my $v (@_) {
        is(unpack('H*', encode_quit_line($v->{secs}, unhex $v->{reason})), $v->{bytes},
            "$v->{name}: encode");
    }
}

# The server reads it too: whoever removed its socket may have said why.
sub last_quit {
    for my $v (@_) {
        my @quit = decode_last_quit(unhex $v->{text});
        is_deeply(@quit ? [ "$quit[0]", unpack('H*', $quit[1]) ] : undef,
            defined $v->{secs} ? [ @$v{qw(secs reason)} ] : undef, "$v->{name}: decode");
    }
}

sub env_entry {
    for my $v (@_) {
        my @split = split_env_entry(unhex $v->{entry});
        is_deeply(@split ? \@split : undef,
            $v->{split} && [ map { unhex $_ } @{ $v->{split} } ], "$v->{name}: split");
    }
}

# Not Wire's: IO::FDPass sends the byte that carries the fd (the server
# to the monitor, the monitor to an executor), and reads it.
sub hand_over {
    for my $v (@_) {
        is($v->{fds}, 1, "$v->{name}: one fd a message, as IO::FDPass sends");
        socketpair(my $ours, my $theirs, AF_UNIX, SOCK_STREAM, PF_UNSPEC) or die "socketpair: $!\n";
        ok(IO::FDPass::send(fileno $ours, fileno $ours), "$v->{name}: sent");
        sysread($theirs, my $bytes, 64);
        is(unpack('H*', $bytes), $v->{bytes}, "$v->{name}: IO::FDPass's bytes");
        ok(IO::FDPass::send(fileno $ours, fileno $ours), "$v->{name}: sent again");
        my $fd = IO::FDPass::recv(fileno $theirs);
        ok($fd >= 0, "$v->{name}: IO::FDPass receives the fd");
        POSIX::close($fd) if $fd >= 0;
    }
}
