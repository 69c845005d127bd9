package Proc::Prefork::Interp::Reload;

# Auto-reload (as the Rust side's src/script/reload.rs): files whose
# change since the server's start means "quit; the next call starts a
# fresh server". An inotify watch marks them dirty, and only then does a
# call stat them all. A missing file is no reason; an unreadable one is.

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
    IN_DELETE_SELF => 0x400,
    IN_MOVE_SELF   => 0x800,
    IN_NONBLOCK    => 0x800,      # O_NONBLOCK
    IN_CLOEXEC     => 0x80000,    # O_CLOEXEC
};
use constant WATCH_MASK =>
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF;

# Watches @$files, changed after $started (seconds since the epoch). The
# watch comes first, then the first call checks every file (dirty):
# nothing changed between the two is missed.
sub new {
    my ($class, $files, $started) = @_;
    my $self = bless { files => $files, started => $started, dirty => 1 }, $class;
    $self->{watch} = $self->watch_files;
    delete $self->{watch} unless $self->{watch};
    return $self;
}

# The handle that becomes readable when a file may have changed; undef
# when there is none (then every call checks).
sub watch { return $_[0]{watch} }

# Returns the inotify handle, or nothing (then: stat every call).
sub watch_files {
    my ($self) = @_;
    my $init = syscall_number('inotify_init1') or return;
    my $fd = syscall($init, IN_NONBLOCK | IN_CLOEXEC);
    return if $fd < 0;
    my $watch = fdopen($fd, '<');
    return $self->add_watches($watch) ? $watch : ();
}

# (Re-)adds a watch per file; a file replaced by rename needs a new one.
sub add_watches {
    my ($self, $watch) = @_;
    my $add = syscall_number('inotify_add_watch');
    for my $file (@{ $self->{files} }) {
        my $path = "$file";    # a string, so syscall passes its address
        next if syscall($add, fileno $watch, $path, WATCH_MASK) >= 0;
        next if $! == ENOENT;    # a missing file is no reason to reload
        write_log('err', "cannot watch $file: $!; checking every call instead");
        return 0;
    }
    return 1;
}

# The watch said something: the next call checks.
sub heard {
    my ($self) = @_;
    1 while sysread($self->{watch}, my $events, 65536);
    $self->{dirty} = 1;
    return;
}

# Before a call: the file that changed (the server quits), or undef.
sub check {
    my ($self) = @_;
    return unless $self->{dirty} || !$self->{watch};
    my ($file, $missing) = $self->changed_file;
    return $file if defined $file;
    if ($self->{watch}) {
        # A missing file has no watch to say when it is made again:
        # while one is missing, every call checks.
        $self->{dirty} = $missing;
        delete $self->{watch} unless $self->add_watches($self->{watch});
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
