"""Pre-copy: an idle spare executor copies in advance the pages its
call's end would copy.

A call that ends normally (no fast_exit) runs CPython's finalisation,
which writes to most of what the server's initialisation made: each
page it writes is shared copy-on-write with the server, the monitor and
the spares, and is copied there and then, one fault at a time (about
3,300 of them, 12-16 ms, for a script importing ten heavy stdlib
modules). A spare sits idle between a person's calls, so it copies those
pages first, with madvise(MADV_POPULATE_WRITE), and the call's end then
writes to pages of its own. The end itself is unchanged: finalisation
runs as before.

Which pages: those of the private writable mappings (rw-p: [heap], the
anonymous ones, which hold pymalloc's arenas and malloc's large blocks,
and the data sections of the interpreter and its extension modules)
that /proc/self/pagemap says are present, anonymous and not this
process's alone: those a write would copy. Pages the server never
touched are left (populating them would only take memory), and so are
file pages never written (a data section's untouched ones). (A page
only ever read, mapped to the kernel's zero page, looks the same and is
copied too; the benchmark's script has none.) With the data sections
too, not only [heap] and the anonymous mappings, a call's end takes 75
copy-on-write faults instead of 350.

It never holds a call back: it works a chunk at a time (_CHUNK_PAGES)
and, between chunks, polls the hand-over socket with no timeout; a call
there (or the monitor's EOF) ends it at once, wherever it is. What is
copied by then is copied. At its first failure (a mapping gone, out of
memory) it does nothing more, silently; whether the kernel has
MADV_POPULATE_WRITE at all (Linux 5.14) is tried once, in the setup run
(supported).

Where it runs: in the spare, from the moment it is forked (the monitor
forks it as the previous call starts) until its call comes. The spare
is single-threaded, and its copy runs beside the call in flight on
another core; the pages it copies are those the next call's end would
have copied, so a call's CPU stays the same (./bench python).
Each idle spare then holds its own copy of those pages: at most
MOST_BYTES (256 MiB) of them. A script that holds more (a large array
that its calls never write to, which today's end frees without copying)
would otherwise have every spare hold a copy of all of it, and spend
seconds of CPU on it; past the cap, its calls' ends copy what they
write, as before."""

import ctypes
import mmap
import os
import select

from . import _sys

_PAGE = mmap.PAGESIZE
# Pages looked at (their pagemap entries, 8 bytes each), and copied where
# a write would copy them, between two looks at the hand-over socket. 64
# (256 KiB): copying all of them takes 0.16 ms (median; 0.4 at most seen)
# on this project's machine kind, a 2-core VM, so a call arriving
# mid-chunk waits that long at most; a look costs a poll() (about 1 us).
_CHUNK_PAGES = 64

# The most a spare copies in advance (see the module's docs).
MOST_BYTES = 256 << 20

# /proc/PID/pagemap's bits (the kernel's admin-guide/mm/pagemap.rst).
_PRESENT = 1 << 63
_FILE_OR_SHARED_ANON = 1 << 61
_EXCLUSIVE = 1 << 56  # mapped by this process only
_PICKED = _PRESENT | _FILE_OR_SHARED_ANON | _EXCLUSIVE


def supported():
    """None if MADV_POPULATE_WRITE works here (tried on a page of our
    own), else why not, in words."""
    area = mmap.mmap(-1, _PAGE)
    try:
        page = (ctypes.c_char * _PAGE).from_buffer(area)
        try:
            err = _sys.populate_write(ctypes.addressof(page), _PAGE)
        finally:
            del page  # the buffer export would keep area from closing
    finally:
        area.close()
    if err == 0:
        return None
    return "madvise(MADV_POPULATE_WRITE): %s (Linux 5.14 or later has it)" % os.strerror(err)


def regions(maps):
    """The private writable mappings in /proc/PID/maps's text (bytes), as
    (start, end): anonymous ones ([heap], named [anon:...] or not named)
    and files' (their copied pages are anonymous). Not the stack nor the
    kernel's special mappings."""
    found = []
    for line in maps.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 5 or fields[1] != b"rw-p":
            continue
        name = fields[5].strip() if len(fields) == 6 else b""
        if name.startswith(b"[") and name != b"[heap]" and not name.startswith(b"[anon:"):
            continue
        start, _, end = fields[0].partition(b"-")
        found.append((int(start, 16), int(end, 16)))
    return found


def runs(entries):
    """(index, count) of each run of consecutive pages, in a sequence of
    pagemap entries, that a write would copy: present, anonymous, and
    not mapped by this process alone."""
    start = None
    for i, entry in enumerate(entries):
        if entry & _PICKED == _PRESENT:
            if start is None:
                start = i
        elif start is not None:
            yield start, i - start
            start = None
    if start is not None:
        yield start, len(entries) - start


def precopy(handover, most_bytes=MOST_BYTES):
    """Copies the pages a write would copy (see the module), until done,
    most_bytes are copied, or a call (anything) is readable on handover;
    never raises an OSError."""
    try:
        poller = select.poll()
        poller.register(handover, select.POLLIN)
        with open("/proc/self/maps", "rb") as f:
            maps = f.read()
        pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        _copy(regions(maps), pagemap, poller, most_bytes // _PAGE)
    except OSError:
        pass
    finally:
        os.close(pagemap)


def _copy(found, pagemap, poller, most_pages):
    for start, end in found:
        for chunk in range(start, end, _CHUNK_PAGES * _PAGE):
            if poller.poll(0):
                return
            pages = min(_CHUNK_PAGES, (end - chunk) // _PAGE)
            data = os.pread(pagemap, pages * 8, chunk // _PAGE * 8)
            for first, count in runs(memoryview(data)[:len(data) // 8 * 8].cast("Q")):
                count = min(count, most_pages)
                if count <= 0 or _sys.populate_write(chunk + first * _PAGE, count * _PAGE):
                    return
                most_pages -= count
