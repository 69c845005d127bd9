package Proc::Prefork::Interp::Reload;

# Auto-reload (as the Rust side's src/script/reload.rs): files whose
# change since the server's start means "quit; the next call starts a
# fresh server". An inotify watch marks them dirty, and only then does a
# call stat them all. A missing file is no reason; an unreadable one is.
#
# The same inotify instance carries the server's watch on its socket's
# directory (capability "watch"): one instance per server, of the 128 a
# user has by default.

use strict;
use warnings;

use POSIX qw(:errno_h);
use Proc::Prefork::Interp::Log;
use Proc::Prefork::Interp::Sys;
use Time::HiRes ();

our $VERSION = '0.1.0';

# inotify(7), for checks that cost nothing per call.
use constant {
    IN_MODIFY      => 0x2,
    IN_ATTRIB      => 0x4,
    IN_CLOSE_WRITE => 0x8,
    IN_MOVED_FROM  => 0x40,
    IN_MOVED_TO    => 0x80,
    IN_CREATE      => 0x100,
    IN_DELETE      => 0x200,
    IN_DELETE_SELF => 0x400,
    IN_MOVE_SELF   => 0x800,
    IN_Q_OVERFLOW  => 0x4000,
    IN_IGNORED     => 0x8000,
};
# What makes a watched file worth a look.
use constant WATCH_MASK =>
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF;
# What in the socket's directory may mean the socket went.
use constant DIR_MASK =>
    IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF;
# On the socket's directory: its watch is gone, or may be.
use constant DIR_GONE => IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED;

# Watches @$files, changed after $started (seconds since the epoch). The
# watch comes first, then the first call checks every file (dirty):
# nothing changed between the two is missed.
sub new {
    my ($class, $files, $started) = @_;
    my $self = bless { files => $files, started => $started, dirty => 1 }, $class;
    $self->{watch} = inotify_open();
    if (!$self->{watch}) {
        $self->{no_inotify} = "$!";
        delete $self->{watch};
    }
    $self->add_watches;
    return $self;
}

# The handle that becomes readable when a file may have changed (or the
# socket's directory did); undef when there is none (then every call
# checks).
sub watch { return $_[0]{watch} }

# Why there is no inotify instance (strerror's text), or undef.
sub without_inotify { return $_[0]{no_inotify} }

# The first file that cannot be watched (so every call checks every
# file), and why: (FILE, REASON), or nothing.
sub unwatched_file { return @{ $_[0]{unwatched} // [] } }

# Watches the directory of the socket at $path for its removal or
# replacement, in the same instance. False, with $! set, when it cannot:
# then the instance is closed (every call checks every file; the server
# checks its socket path itself), for the user may well need it more.
sub watch_socket {
    my ($self, $path) = @_;
    if (!$self->{watch}) {
        $! = ENOSYS;
        return 0;
    }
    my ($dir, $name) = $path =~ m{\A(.*)/([^/]*)\z}s ? ($1, $2) : ('.', $path);
    $dir = '/' if $dir eq '';
    my $wd = inotify_add_watch($self->{watch}, $dir, DIR_MASK);
    if (!defined $wd) {
        my $errno = $! + 0;
        $self->{no_inotify} = "$!";
        delete $self->{watch};    # (closes it)
        $! = $errno;
        return 0;
    }
    $self->{socket_dir} = { wd => $wd, name => $name };
    return 1;
}

# Reads the pending events. A file's marks the files for a check at the
# next call; true if one may mean the socket went (its name in its
# directory, the directory's own end, or lost events).
sub note_events {
    my ($self) = @_;
    my $dir = $self->{socket_dir};
    my $socket = 0;
    for my $event (inotify_events($self->{watch})) {
        my ($wd, $mask, $name) = @$event;
        if ($mask & IN_Q_OVERFLOW) {
            $socket = $self->{dirty} = 1;
        } elsif ($dir && $wd == $dir->{wd}) {
            $socket = 1 if $name eq $dir->{name} || $mask & DIR_GONE;
        } else {
            $self->{dirty} = 1;
        }
    }
    return $socket;
}

# Before a call: the file that changed (the server quits), or undef.
sub check {
    my ($self) = @_;
    return unless $self->{dirty} || !$self->{watch} || $self->{unwatched};
    my ($file, $missing) = $self->changed_file;
    return $file if defined $file;
    # A missing file has no watch to say when it is made again: while
    # one is missing, every call checks.
    $self->{dirty} = $missing;
    $self->add_watches;
    return;
}

# (Re-)adds a watch per file; a file replaced by rename needs a new one.
# A file that cannot be watched (not for being missing) means checking
# at every call instead, said once; the instance stays, for the socket's
# directory.
sub add_watches {
    my ($self) = @_;
    return if !$self->{watch} || $self->{unwatched};
    for my $file (@{ $self->{files} }) {
        next if defined inotify_add_watch($self->{watch}, $file, WATCH_MASK);
        next if $! == ENOENT;    # a missing file is no reason to reload
        $self->{unwatched} = [ $file, "$!" ];
        write_log('err', "cannot watch $file ($!): checking files at every call instead");
        return;
    }
    return;
}

# Returns the first changed file (or undef), and whether one is missing.
sub changed_file {
    my ($self) = @_;
    my $missing = 0;
    for my $file (@{ $self->{files} }) {
        my @st = Time::HiRes::stat($file);
        if (!@st) {
            if ($! == ENOENT) {
                $missing = 1;
                next;
            }
            write_log('err', "cannot check $file: $!");
            return ($file, $missing);
        }
        return ($file, $missing) if $st[9] > $self->{started};
    }
    return (undef, $missing);
}

1;
