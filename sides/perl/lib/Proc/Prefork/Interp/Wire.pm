package Proc::Prefork::Interp::Wire;

# The bytes of man/prefork-interp.7 that the Perl side sends and reads,
# as the Rust side's src/protocol/codec.rs (same names): pure encode and
# decode, no I/O, no other module of ours (core modules only;
# Digest::SHA loaded when first needed). The wire vectors
# (sides/wire-vectors.json) hold every message; t/wire.t checks these
# functions against them. A constant whose Rust name is VERSION is
# PROTOCOL_VERSION here (a sub VERSION would be Perl's
# UNIVERSAL::VERSION).
#
# A decoder's error is a Proc::Prefork::Interp::Wire::Error: its kind
# is the Rust side's ProtocolError variant (BadRequestByte...), and it
# reads (as a string) as its message, a line.

use strict;
use warnings;

use Exporter qw(import);

our $VERSION = '0.1.0';

# The setup run's environment variable, and its one version.
use constant { ENV_VAR => 'PREFORK_INTERP', PROTOCOL_VERSION => 'v1' };
use constant SETUP_CAPS_PREFIX => 'pfi-caps=';
# The word of PREFORK_INTERP that bounds the server's idle time (seconds).
use constant SETUP_IDLE_PREFIX => 'pfi-idle=';
use constant SETUP_KEEPER_PREFIX => 'pfi-keeper=';
# The keeper program's first argument (then the script's pid).
use constant KEEPER_ARGUMENT => '--session-keeper';

# The greeting: magic, u32be length, xdata (at most MAX_XDATA_LEN).
use constant { GREETING_MAGIC => "PFI\n", MAX_XDATA_LEN => 64 * 1024, CAPS_MAGIC => 'pfi-caps 1' };
# Negotiated extensions, offered to a client that declared them.
# (In this order, the Rust side's: a server offers them so; "restore" only
# as this side's monitor reads the 'R' frame, whose bytes it would
# otherwise take for frames.)
use constant OUR_CAPS => qw(signals context tty limits closed dispositions watch restore);
# The namespaces a server's world is made of, in the digest's order.
use constant WORLD_NAMESPACES => qw(mnt pid net user uts ipc cgroup time);

# The request byte: 0 (v1), or 1 (extended) with flags: 0x02 context;
# 0x04, 0x08, 0x10: fd 0, 1, 2 is the call's own pseudo-terminal; with
# one of those, 0x20: the script starts in its terminal's background;
# 0x40: a limits message follows; 0x80: a second byte follows at once,
# whose 0x01, 0x02, 0x04 say the caller's fd 0, 1, 2 is closed, and 0x08
# that a caller-signals message follows.
use constant {
    REQUEST_BYTE                => 0x00,
    REQUEST_BYTE_EXTENDED       => 0x01,
    REQUEST_FLAG_CONTEXT        => 0x02,
    REQUEST_FLAG_PTY_BACKGROUND => 0x20,
    REQUEST_FLAG_LIMITS         => 0x40,
    REQUEST_FLAG_SECOND_BYTE    => 0x80,
};
use constant REQUEST_FLAG_PTY      => (0x04, 0x08, 0x10);
use constant REQUEST_SECOND_CLOSED => (0x01, 0x02, 0x04);
use constant REQUEST_SECOND_CALLER_SIGNALS => 0x08;
# A caller-signals message: u64be ignored, u64be blocked (bit n-1: signal
# n, 1 to MAX_SIGNAL).
use constant { CALLER_SIGNALS_LEN => 16, MAX_SIGNAL => 64 };
use constant MAX_PAYLOAD_LEN       => 64 * 1024 * 1024;
# A limits message: u8 N, N entries of LIMITS_ENTRY_LEN, the tail.
use constant { LIMITS_ENTRY_LEN => 17, LIMITS_TAIL_LEN => 8 };
# A limits message's oom_score_adj when the caller could not read its own.
use constant OOM_SCORE_UNKNOWN => -2**31;

# Inside a script side: monitor to server, one byte a call; executor to
# monitor ('r', the request byte...); keeper to monitor and back (frames).
use constant {
    MONITOR_CALL_ENDED   => 'd',
    MONITOR_CALL_DROPPED => 'h',
    EXECUTOR_READY       => 'r',
    KEEPER_STOPPED       => 't',
    KEEPER_STATUS        => 'x',
    KEEPER_FOREGROUND    => 'f',
};

# Frames of an extended call: kind, u32be value.
use constant {
    FRAME_LEN          => 5,
    FRAME_SIGNAL       => 'S',
    FRAME_EXECUTOR_PID => 'P',
    FRAME_STATUS       => 'X',
    FRAME_FOREGROUND   => 'F',
    FRAME_STOPPED      => 'T',
    FRAME_RESTORE      => 'R',
};
# Terminal settings (capability restore): the fixed part (four flag
# words, two speeds, u32be each) then the control characters, at most 64
# (more than any platform has). What follows an 'R' frame of value N > 0
# is a restore message: a count byte C, then the settings to put back and
# those the client left, C control characters each (MAX_RESTORE_LEN at
# most).
use constant { TERMINAL_SETTINGS_FIXED => 24, MAX_TERMINAL_SETTINGS => 24 + 64 };
use constant MAX_RESTORE_LEN => 1 + 2 * MAX_TERMINAL_SETTINGS;
# Signals a client may have delivered to the script's group (by name:
# perl's numbers are the platform's).
use constant FORWARDED_SIGNALS => qw(INT TERM HUP QUIT USR1 USR2 WINCH ALRM TSTP CONT);

our @EXPORT = qw(
    ENV_VAR PROTOCOL_VERSION SETUP_CAPS_PREFIX SETUP_IDLE_PREFIX SETUP_KEEPER_PREFIX KEEPER_ARGUMENT GREETING_MAGIC MAX_XDATA_LEN CAPS_MAGIC OUR_CAPS
    WORLD_NAMESPACES REQUEST_BYTE REQUEST_BYTE_EXTENDED REQUEST_FLAG_CONTEXT
    REQUEST_FLAG_PTY REQUEST_FLAG_PTY_BACKGROUND REQUEST_FLAG_LIMITS
    REQUEST_FLAG_SECOND_BYTE REQUEST_SECOND_CLOSED REQUEST_SECOND_CALLER_SIGNALS
    CALLER_SIGNALS_LEN MAX_SIGNAL MAX_PAYLOAD_LEN LIMITS_ENTRY_LEN
    LIMITS_TAIL_LEN OOM_SCORE_UNKNOWN MONITOR_CALL_ENDED MONITOR_CALL_DROPPED
    EXECUTOR_READY KEEPER_STOPPED KEEPER_STATUS KEEPER_FOREGROUND FRAME_LEN FRAME_SIGNAL
    FRAME_EXECUTOR_PID FRAME_STATUS FRAME_FOREGROUND FRAME_STOPPED FRAME_RESTORE
    TERMINAL_SETTINGS_FIXED MAX_TERMINAL_SETTINGS MAX_RESTORE_LEN FORWARDED_SIGNALS
    encode_greeting encode_greeting_xdata trackable_env_name env_dependency env_digest
    world_digest decode_setup_env check_request_byte has_second_request_byte
    check_second_request_byte encode_request_bytes on_pty encode_executor_ready
    decode_executor_ready decode_payload_len decode_payload split_env_entry
    decode_limits encode_caller_signals decode_caller_signals encode_status decode_status encode_frame decode_frame
    encode_context_umask decode_context_umask lock_path_for_socket encode_quit_line
    decode_last_quit check_terminal_settings_len encode_terminal_settings
    decode_terminal_settings encode_restore decode_restore check_restore_len
);

{
    package Proc::Prefork::Interp::Wire::Error;
    use overload '""' => sub { $_[0]{message} }, fallback => 1;
    sub kind    { return $_[0]{kind} }
    sub message { return $_[0]{message} }
}

# Dies with an error of this kind (a ProtocolError variant's name).
sub _error {
    my ($kind, $message) = @_;
    die bless { kind => $kind, message => "$message\n" }, 'Proc::Prefork::Interp::Wire::Error';
}

# ------------------------------------------------------------ greeting

sub encode_greeting {
    my ($xdata) = @_;
    return GREETING_MAGIC . pack('N', length $xdata) . $xdata;
}

# The greeting's xdata for a client offered @$offered (none: a v1
# client, no xdata): caps, the world's digest (or undef), the env
# dependency (what initialisation read: {digest, names}, or undef), the
# start dependency (what the interpreter read as it started: likewise),
# which of fds 0, 1, 2 were terminals in initialisation (bit N for fd N,
# or undef), what the server does without (degraded: one line of text,
# or undef), then the counters {served, running, idle_ms}.
sub encode_greeting_xdata {
    my ($offered, $world, $env, $start, $terminals, $degraded, $counters) = @_;
    return '' unless @$offered;
    my $x = CAPS_MAGIC . "\ncaps " . join(',', @$offered) . "\n";
    $x .= "world $world\n" if defined $world;
    $x .= join(' ', 'env', $env->{digest}, @{ $env->{names} }) . "\n" if $env;
    $x .= join(' ', 'start', $start->{digest}, @{ $start->{names} }) . "\n" if $start;
    $x .= "terminals $terminals\n" if defined $terminals;
    if (defined $degraded) {
        # One line, whatever the text (a newline would end it early).
        (my $line = $degraded) =~ tr/\n/ /;
        $x .= "degraded $line\n";
    }
    return $x . "served $counters->{served}\nrunning $counters->{running}\n"
        . "idle $counters->{idle_ms}\n";
}

# Whether a name read in initialisation can be on the env line.
sub trackable_env_name {
    my ($name) = @_;
    return length($name) && $name ne ENV_VAR && $name !~ /[ \n=\0]/;
}

# The dependency on @$names (any order, repeats and untrackable ones
# dropped), with the values $value_of->(NAME) gives (undef: unset):
# {digest, names}, or undef for no names.
sub env_dependency {
    my ($names, $value_of) = @_;
    my %seen;
    my @names = sort grep { trackable_env_name($_) && !$seen{$_}++ } @$names;
    return unless @names;
    return { digest => env_digest(\@names, $value_of), names => \@names };
}

# SHA-256 of NAME=VALUE\0 (NAME\0 if unset) for each name, in order.
sub env_digest {
    my ($names, $value_of) = @_;
    require Digest::SHA;    # (not for a direct run, which never digests)
    return Digest::SHA::sha256_hex(join '', map {
        my $value = $value_of->($_);
        defined $value ? "$_=$value\0" : "$_\0"
    } @$names);
}

# The world's digest: SHA-256 of NAME:INODE\n for each of
# WORLD_NAMESPACES (@$inodes in that order; undef: `-`), then cgroup\n
# and /proc/self/cgroup's text.
sub world_digest {
    my ($inodes, $cgroups) = @_;
    my @names = WORLD_NAMESPACES;
    my $text = join '', map { "$names[$_]:" . ($inodes->[$_] // '-') . "\n" } 0 .. $#names;
    require Digest::SHA;
    return Digest::SHA::sha256_hex("${text}cgroup\n$cgroups");
}

# ----------------------------------------------------------- setup run

# PREFORK_INTERP=v1,SECS.NSECS LISTEN,CALL,WATCHI,WATCHE (extra words and
# items are ignored; our client adds pfi-caps=NAME,... and may add
# pfi-idle=SECONDS and pfi-keeper=HEX). This is the order chiark-utils' client sends:
# WATCHI is the write end of the watcher's stdin, WATCHE the read end of
# its stderr. Returns {started_secs, started_nsecs, listen, call,
# watch_in, watch_err, client_caps => [NAME...], idle_limit, keeper}
# (idle_limit: undef without the word, or when its number is malformed,
# which is ignored as an unknown word is; keeper: a program's path, the
# bytes of the word's hex digits, undef likewise).
sub decode_setup_env {
    my ($value) = @_;
    my $bad = sub { _error(BadSetupEnv => "bad PREFORK_INTERP: $_[0]") };
    my @words = split / /, $value, -1;
    $bad->('expected two words') unless @words >= 2;
    my ($version, $time) = split /,/, $words[0], -1;
    $bad->('unsupported version ' . ($version // '') . ' (expected ' . PROTOCOL_VERSION . ')')
        unless defined $version && $version eq PROTOCOL_VERSION;
    $bad->('start time must be SECS.NSECS with 9 digits of nanoseconds')
        unless defined $time && $time =~ /\A([0-9]+)\.([0-9]{9})\z/;
    my ($secs, $nsecs) = ($1, $2);
    my @fds = split /,/, $words[1], -1;
    $bad->('file descriptors must be four non-negative numbers')
        unless @fds >= 4 && !grep { !/\A[0-9]+\z/ } @fds[0 .. 3];
    my $prefix = SETUP_CAPS_PREFIX;
    my ($caps) = map { /\A\Q$prefix\E(.*)\z/s ? $1 : () } @words[2 .. $#words];
    my $idle_prefix = SETUP_IDLE_PREFIX;
    my ($idle) = map { /\A\Q$idle_prefix\E(.*)\z/s ? $1 : () } @words[2 .. $#words];
    my $keeper_prefix = SETUP_KEEPER_PREFIX;
    my ($keeper) = map { /\A\Q$keeper_prefix\E(.*)\z/s ? $1 : () } @words[2 .. $#words];
    my %setup = (started_secs => $secs + 0, started_nsecs => $nsecs + 0,
        client_caps => [ grep {length} split /,/, $caps // '' ],
        idle_limit  => defined $idle && $idle =~ /\A[0-9]+\z/ ? $idle + 0 : undef,
        keeper      => defined $keeper && $keeper =~ /\A(?:[0-9A-Fa-f]{2})+\z/
            ? pack('H*', $keeper) : undef);
    @setup{qw(listen call watch_in watch_err)} = map { $_ + 0 } @fds[0 .. 3];
    return \%setup;
}

# ------------------------------------------------------------- request

sub _pty_bits { my $bits = 0; $bits |= $_ for REQUEST_FLAG_PTY; return $bits }

# What the request byte asks for: {extended, context, pty => [3],
# pty_background, limits, closed => [3], caller_signals} (the last two
# from the second byte, see check_second_request_byte). Pure: every flag is taken whatever was
# offered.
sub check_request_byte {
    my ($byte) = @_;
    my %kind = (extended => 0, context => 0, pty => [ 0, 0, 0 ], pty_background => 0,
        limits => 0, closed => [ 0, 0, 0 ], caller_signals => 0);
    return \%kind if $byte == REQUEST_BYTE;
    _error(BadRequestByte => sprintf 'request starts with byte %#04x, expected 0x00, or 0x01'
            . ' with flags of 0x02, 0x04, 0x08, 0x10, 0x20 (with one of 0x04, 0x08, 0x10),'
            . ' 0x40, 0x80', $byte)
        if !($byte & REQUEST_BYTE_EXTENDED)
        || ($byte & REQUEST_FLAG_PTY_BACKGROUND && !($byte & _pty_bits()));
    $kind{extended}       = 1;
    $kind{context}        = $byte & REQUEST_FLAG_CONTEXT ? 1 : 0;
    $kind{pty}            = [ map { $byte & $_ ? 1 : 0 } REQUEST_FLAG_PTY ];
    $kind{pty_background} = $byte & REQUEST_FLAG_PTY_BACKGROUND ? 1 : 0;
    $kind{limits}         = $byte & REQUEST_FLAG_LIMITS ? 1 : 0;
    return \%kind;
}

# Whether a checked request byte says a second byte follows.
sub has_second_request_byte {
    my ($byte) = @_;
    return $byte & REQUEST_FLAG_SECOND_BYTE ? 1 : 0;
}

# Adds the second request byte's flags to $kind.
sub check_second_request_byte {
    my ($kind, $byte) = @_;
    my $known = REQUEST_SECOND_CALLER_SIGNALS;
    $known |= $_ for REQUEST_SECOND_CLOSED;
    _error(BadSecondRequestByte => sprintf "request's second flags byte is %#04x, expected"
            . ' flags of 0x01, 0x02, 0x04, 0x08', $byte)
        if $byte & ~$known & 0xff;
    $kind->{closed} = [ map { $byte & $_ ? 1 : 0 } REQUEST_SECOND_CLOSED ];
    $kind->{caller_signals} = $byte & REQUEST_SECOND_CALLER_SIGNALS ? 1 : 0;
    return $kind;
}

# Whether the call runs on a pseudo-terminal of its own; in list
# context, which of fds 0, 1, 2 are it.
sub on_pty {
    my ($kind) = @_;
    return grep { $kind->{pty}[$_] } 0 .. 2;
}

# The bytes that open a request of this kind (the shortest form).
sub encode_request_bytes {
    my ($kind) = @_;
    my ($byte, $second) = (REQUEST_BYTE, 0);
    if ($kind->{extended}) {
        my @pty    = REQUEST_FLAG_PTY;
        my @closed = REQUEST_SECOND_CLOSED;
        $byte |= REQUEST_BYTE_EXTENDED;
        $byte |= REQUEST_FLAG_CONTEXT if $kind->{context};
        $byte |= $pty[$_] for grep { $kind->{pty}[$_] } 0 .. 2;
        $byte |= REQUEST_FLAG_PTY_BACKGROUND if $kind->{pty_background} && on_pty($kind);
        $byte |= REQUEST_FLAG_LIMITS if $kind->{limits};
        $second |= $closed[$_] for grep { $kind->{closed}[$_] } 0 .. 2;
        $second |= REQUEST_SECOND_CALLER_SIGNALS if $kind->{caller_signals};
    }
    return $second ? pack('CC', $byte | REQUEST_FLAG_SECOND_BYTE, $second) : chr $byte;
}

# The executor's "ready": 'r' and the request byte, and on a
# pseudo-terminal of its own u32be(the script's pid).
sub encode_executor_ready {
    my ($kind, $script) = @_;
    return EXECUTOR_READY . substr(encode_request_bytes($kind), 0, 1)
        . (on_pty($kind) ? pack('N', $script) : '');
}

# Its first two bytes: the call's kind (the script's pid follows if it
# is on a pseudo-terminal of its own).
sub decode_executor_ready {
    my ($message) = @_;
    my ($tag, $byte) = unpack 'a C', $message;
    _error(BadExecutorMessage => sprintf "executor's message starts with %#04x, expected 'r'",
        ord $tag)
        unless $tag eq EXECUTOR_READY;
    _error(BadExecutorMessage => 'executor said ' . length($message) . ' bytes, expected 2')
        unless length $message == 2;
    return check_request_byte($byte);
}

# ------------------------------------------------------------- payload

sub decode_payload_len {
    my ($prefix) = @_;
    my $length = unpack 'N', $prefix;
    _error(PayloadTooLong => "request too long ($length bytes, at most " . MAX_PAYLOAD_LEN . ')')
        if $length > MAX_PAYLOAD_LEN;
    return $length;
}

# Splits a request payload ("NAME=value\0"... "\0" "arg\0"...):
# {env => [ENTRY...], args => [ARG...]}.
sub decode_payload {
    my ($payload) = @_;
    _error(PayloadUnterminated => 'request payload does not end with a NUL')
        unless length $payload && substr($payload, -1) eq "\0";
    my $body = substr($payload, 0, -1);
    # (split makes nothing of an empty string: a payload of one NUL, no
    # environment and no arguments, is one empty string.)
    my @strings = length $body ? split(/\0/, $body, -1) : ('');
    my @env;
    while (1) {
        _error(PayloadNoEnvEnd => 'request payload has no empty string ending the environment')
            unless @strings;
        my $entry = shift @strings;
        last if $entry eq '';
        push @env, $entry;
    }
    return { env => \@env, args => \@strings };
}

# An environment entry split at its first '=' after its first byte (a
# leading '=' is the name's, as in glibc): (NAME, VALUE), or nothing.
sub split_env_entry {
    my ($entry) = @_;
    my $eq = index $entry, '=', 1;
    return if $eq < 0;
    return (substr($entry, 0, $eq), substr($entry, $eq + 1));
}

# What follows a limits message's count byte $n: $n entries (u8
# resource, u64be soft, u64be hard), i32be nice, i32be oom_score_adj.
# Returns {rlimits => [[RESOURCE, SOFT, HARD]...], nice, oom_score_adj}.
sub decode_limits {
    my ($n, $body) = @_;
    my $want = $n * LIMITS_ENTRY_LEN + LIMITS_TAIL_LEN;
    _error(BadLimits => sprintf 'limits message of %d bytes for %d resources, expected %d',
        length $body, $n, $want)
        unless length $body == $want;
    my @fields = unpack "(C Q> Q>)$n l> l>", $body;
    my $oom  = pop @fields;
    my $nice = pop @fields;
    return { rlimits => [ map { [ @fields[ 3 * $_ .. 3 * $_ + 2 ] ] } 0 .. $n - 1 ],
        nice => $nice, oom_score_adj => $oom };
}

# A caller-signals message from {ignored => [N...], blocked => [N...]}.
sub encode_caller_signals {
    my ($signals) = @_;
    my @bits = map {
        my $bits = 0;
        $bits |= 1 << ($_ - 1) for @$_;
        $bits
    } @$signals{qw(ignored blocked)};
    return pack 'Q> Q>', @bits;
}

# Decodes a caller-signals message (CALLER_SIGNALS_LEN bytes; every bit
# pattern is valid) into {ignored => [N...], blocked => [N...]}, lowest
# first.
sub decode_caller_signals {
    my ($message) = @_;
    my ($ignored, $blocked) = unpack 'Q> Q>', $message;
    my $numbers = sub {
        my ($bits) = @_;
        return [ grep { $bits & (1 << ($_ - 1)) } 1 .. MAX_SIGNAL ];
    };
    return { ignored => $numbers->($ignored), blocked => $numbers->($blocked) };
}

sub encode_context_umask { return pack 'N', $_[0] }
sub decode_context_umask { return unpack 'N', $_[0] }

# ------------------------------------------------------ status, frames

# A raw wait status (v1 calls), u32be; read back signed.
sub encode_status { return pack 'N', $_[0] & 0xffffffff }
sub decode_status { return unpack 'l>', $_[0] }

sub encode_frame {
    my ($kind, $value) = @_;
    return pack 'a N', $kind, $value & 0xffffffff;
}

# (KIND, VALUE); unknown kinds are the caller's to judge.
sub decode_frame { return unpack 'a N', $_[0] }

# The fields of terminal settings, in their order on the wire.
my @TERMINAL_WORDS = qw(iflag oflag cflag lflag ispeed ospeed);

# Dies unless $length bytes can be terminal settings: a monitor asks
# before it reads them, so that an 'R' frame's value is never a read of
# gigabytes.
sub check_terminal_settings_len {
    my ($length) = @_;
    _error(BadTerminalSettings => sprintf 'terminal settings of %d bytes (%d to %d)', $length,
        TERMINAL_SETTINGS_FIXED, MAX_TERMINAL_SETTINGS)
        if $length < TERMINAL_SETTINGS_FIXED || $length > MAX_TERMINAL_SETTINGS;
    return;
}

# The bytes after an 'R' frame from {iflag, oflag, cflag, lflag, ispeed,
# ospeed, cc => [BYTE...]} (speeds: the platform's B* values).
sub encode_terminal_settings {
    my ($settings) = @_;
    return pack 'N6 C*', (map { $_ & 0xffffffff } @$settings{@TERMINAL_WORDS}),
        @{ $settings->{cc} };
}

# Those bytes decoded, as encode_terminal_settings takes them.
sub decode_terminal_settings {
    my ($bytes) = @_;
    check_terminal_settings_len(length $bytes);
    my %settings;
    @settings{@TERMINAL_WORDS} = unpack 'N6', $bytes;
    $settings{cc} = [ unpack 'C*', substr $bytes, TERMINAL_SETTINGS_FIXED ];
    return \%settings;
}

sub _bad_restore {
    _error(BadRestore => sprintf
            'terminal restore message of %d bytes (a count C, then twice 24 + C, C at most 64)',
        $_[0]);
}

# Dies unless $length bytes can be a restore message: a monitor asks
# before it reads them, so that an 'R' frame's value is never a read of
# gigabytes.
sub check_restore_len {
    my ($length) = @_;
    _bad_restore($length) if $length < 1 + 2 * TERMINAL_SETTINGS_FIXED || $length > MAX_RESTORE_LEN;
    return;
}

# The restore message ('R' frame's bytes) for the settings to put back
# and those the client left, as encode_terminal_settings takes them.
sub encode_restore {
    my ($put_back, $left) = @_;
    my $count = @{ $put_back->{cc} };
    my %left = (%$left, cc => [ (@{ $left->{cc} }, (0) x $count)[ 0 .. $count - 1 ] ]);
    return pack('C', $count) . encode_terminal_settings($put_back) . encode_terminal_settings(\%left);
}

# A restore message decoded: ($put_back, $left).
sub decode_restore {
    my ($bytes) = @_;
    my $length = length $bytes;
    _bad_restore($length) if $length < 1;
    my $block = TERMINAL_SETTINGS_FIXED + unpack 'C', $bytes;
    _bad_restore($length) if $block > MAX_TERMINAL_SETTINGS || $length != 1 + 2 * $block;
    return (decode_terminal_settings(substr $bytes, 1, $block),
        decode_terminal_settings(substr $bytes, 1 + $block, $block));
}

# ------------------------------------------------------- run directory

# The lock file beside a server's socket (BASE/s<ident>, BASE/l<ident>);
# undef for a socket not so named.
sub lock_path_for_socket {
    my ($socket) = @_;
    return unless defined $socket && $socket =~ m{\A(.*/)?s([^/]+)\z}s;
    return ($1 // '') . "l$2";
}

# "quit SECONDS REASON\n", each newline in REASON made a space.
sub encode_quit_line {
    my ($secs, $reason) = @_;
    (my $line = $reason) =~ tr/\n/ /;
    return "quit $secs $line\n";
}

# The last well-formed quit line in a lock file's text: (SECONDS,
# REASON), or nothing.
sub decode_last_quit {
    my ($text) = @_;
    for my $line (reverse split /\n/, $text, -1) {
        return ($1, $2) if $line =~ /\Aquit ([0-9]+) (.*)\z/s;
    }
    return;
}

1;
