package Proc::Prefork::Interp::HugePages;

# MADV_COLLAPSE of the server's heap, once (the same rule as the Rust
# side's src/script/huge_pages.rs).

use strict;
use warnings;

use POSIX qw(:errno_h);
use Proc::Prefork::Interp::Log;
use Proc::Prefork::Interp::Sys;
use Time::HiRes ();

our $VERSION = '0.1.0';

use constant { HUGE_PAGE => 2 << 20, MADV_COLLAPSE => 25 };

# Once the setup run ($setup_run, its pidfd) has gone, so that the pages
# are the server's own (pages still shared with it would not collapse):
# collapses the heap, and logs what that did.
sub collapse_after {
    my ($setup_run) = @_;
    my $rin = '';
    vec($rin, fileno $setup_run, 1) = 1;
    1 while select(my $rout = $rin, undef, undef, undef) < 0 && $! == EINTR;
    close $setup_run;
    my $started = Time::HiRes::time();
    my $collapsed = collapse_heap();
    write_log('info', sprintf('%d MB of heap in huge pages (%.1f ms)',
        $collapsed >> 20, (Time::HiRes::time() - $started) * 1000));
    return;
}

# Asks the kernel to back the resident heap by 2 MB pages now
# (MADV_COLLAPSE, Linux 6.1; elsewhere nothing happens): the 2 MB-aligned
# interiors of the private anonymous writable mappings that are at least
# 3/4 resident. The server does this before it forks the monitor, which
# then shares them: each of its forks (one per call) copies one
# page-table entry per 2 MB instead of 512, and each executor's exit
# tears down as few. Returns the bytes collapsed.
sub collapse_heap {
    my $madvise = syscall_number('madvise') or return 0;
    my $collapsed = 0;
    for my $m (candidates()) {
        my ($start, $end, $rss_kb) = @$m;
        my $from = int(($start + HUGE_PAGE - 1) / HUGE_PAGE) * HUGE_PAGE;
        my $to   = int($end / HUGE_PAGE) * HUGE_PAGE;
        next unless $to > $from && ($rss_kb // 0) * 1024 * 4 >= ($end - $start) * 3;
        $collapsed += $to - $from if syscall($madvise, $from, $to - $from, MADV_COLLAPSE) == 0;
    }
    return $collapsed;
}

# The private anonymous writable mappings: [START, END, RSS_KB] each.
sub candidates {
    open(my $smaps, '<', '/proc/self/smaps') or return;
    my (@candidates, $current);
    while (my $line = <$smaps>) {
        if ($line =~ /\A([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(\S*)/) {
            no warnings 'portable';    # 64-bit addresses
            my ($start, $end, $perms, $inode, $path) = (hex $1, hex $2, $3, $4, $5);
            $current = $perms eq 'rw-p' && $inode == 0 && ($path eq '' || $path eq '[heap]')
                ? [ $start, $end ] : undef;
            push @candidates, $current if $current;
        } elsif ($current && $line =~ /\ARss:\s+(\d+) kB/) {
            $current->[2] = $1;
        }
    }
    close $smaps;
    return @candidates;
}

1;
