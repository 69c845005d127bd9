package Proc::Prefork::Interp::Log;

# The server's messages, to syslog through the C library's (as the Rust
# side's src/script/log.rs): the setup run opens it, nothing connects
# until the first message, and each executor closes what it inherited.

use strict;
use warnings;

use Exporter qw(import);
use Sys::Syslog ();

our $VERSION = '0.1.0';
our @EXPORT = qw(open_log write_log detach_log);

# openlog's arguments, once the server logs. (Per process, as the C
# library's syslog connection and ident are.)
my @logging;

# Logs under $facility (as Sys::Syslog::openlog takes it; '': never),
# with "prefork-interp SCRIPT" and the pid as ident.
sub open_log {
    my ($facility) = @_;
    return unless length $facility;
    # libc's syslog: connects on the first message, never over a network.
    Sys::Syslog::setlogsock('native');
    @logging = ("prefork-interp $0", 'nofatal,pid', $facility);
    Sys::Syslog::openlog(@logging);
    return;
}

sub write_log {
    my ($priority, $message) = @_;
    return unless @logging;
    eval { Sys::Syslog::syslog($priority, '%s', $message) };
    return;
}

# Closes the connection to syslog, which no executor must inherit; the
# next message reconnects (closelog forgets the ident: openlog again, which
# connects nothing yet).
sub detach_log {
    return unless @logging;
    Sys::Syslog::closelog();
    Sys::Syslog::openlog(@logging);
    return;
}

1;
