//! A call on a pseudo-terminal of its own (capability `tty`): what makes
//! a script behind us see a terminal as a direct run would, and leaves
//! the caller's terminal as it found it.
//!
//! ```text
//! caller's terminal (/dev/tty, opened again: our own O_NONBLOCK)
//!     │ raw while we are its foreground job   ▲ restored on stop and end
//!     ▼ keys                                  │ output
//!   client ══ relay ══ pty master
//!                          │  line discipline: echo, ^C ^\ ^Z, SIGWINCH
//!                      pty slave ── executor's fds that were the terminal;
//!                                   its controlling terminal (own session)
//! ```
//!
//! Used when one of fds 0, 1, 2 is our controlling terminal; when no
//! pseudo-terminal can be had, the call gets the caller's terminal
//! itself, as v1 calls do.
//!
//! Job control: the script's place on its terminal follows ours on the
//! caller's ('F' frames: foreground or background). In the foreground
//! the caller's terminal is raw and keys are relayed; in the background
//! we leave it alone, and the script, in its terminal's background too,
//! stops with SIGTTIN when it reads it. The monitor reports the script's
//! stops ('T'); we restore the caller's terminal and stop our process
//! group by the same signal, as the terminal would have stopped a direct
//! run's, except that a script in the background that wants its
//! terminal while we are in the foreground just comes forward. In a
//! pipeline (fd 0 or 1 a pipe), where another process of the job may be
//! using the terminal (`script | less`), the script starts in the
//! background and comes forward, with raw mode, only once it uses its
//! terminal: as sudo does.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{
    SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, killpg, pthread_sigmask, sigaction,
};
use nix::sys::signalfd::SignalFd;
use nix::sys::stat::{Mode, SFlag};
use nix::sys::termios::{
    LocalFlags, SetArg, SpecialCharacterIndices, Termios, cfmakeraw, tcgetattr, tcgetsid, tcsetattr,
};
use nix::unistd::{getpgrp, read, tcgetpgrp, write};

use crate::protocol::{self, Frame, WaitStatus};
use crate::sys;

/// How long output may keep us once the script's status has come, if
/// something it left behind still holds the pseudo-terminal open.
const LINGER: Duration = Duration::from_millis(100);

/// The caller's terminal, and the pseudo-terminal the call runs on.
pub(crate) struct CallTerminal {
    /// The caller's terminal, opened again from /dev/tty.
    user: OwnedFd,
    master: OwnedFd,
    /// Sent with the request, then closed: while we hold it, the master
    /// never reports the script's end.
    slave: Option<OwnedFd>,
    /// Which of fds 0, 1, 2 were the caller's terminal.
    on_pty: [bool; 3],
    /// The caller's settings, to restore while `raw`.
    saved: Termios,
    raw: bool,
    /// Fd 0 or 1 is a pipe: another process of our job may be using the
    /// terminal, so the script comes to its terminal's foreground (and
    /// the caller's terminal goes raw) only once it uses its terminal.
    pipeline: bool,
    /// Whether the script's group is its terminal's foreground.
    script_foreground: bool,
    /// A "\r" at the end of the last output read, held back while line
    /// ends are translated back: the "\n" may come in the next read.
    held_cr: bool,
    /// The caller's terminal has gone (hung up): no keys, and the
    /// script's output is dropped.
    user_gone: bool,
    /// The monitor puts the caller's settings back if we go away while
    /// its terminal is raw (capability `restore`): we tell it each time
    /// we take raw mode ('R') and give it up ('R' 0).
    monitor_restores: bool,
    /// The monitor has this raw spell's settings (an 'R' since `raw`).
    monitor_told: bool,
}

impl CallTerminal {
    /// A pseudo-terminal for this call, if it should have one (see the
    /// module docs); `None` means the call gets our fds as they are.
    /// `stops_on_use`: the script would stop on using its terminal from
    /// the background (it neither ignores nor blocks SIGTTIN, SIGTTOU);
    /// without that, a pipeline's script starts in the foreground.
    /// `monitor_restores`: the server offers `restore`.
    pub(crate) fn open(stops_on_use: bool, monitor_restores: bool) -> Option<CallTerminal> {
        let is_fifo = |fd: i32| {
            // SAFETY: fds 0..2 were checked open at start.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            sys::has_file_type(fd, SFlag::S_IFIFO)
        };
        let pipeline = stops_on_use && (is_fifo(0) || is_fifo(1));
        // SAFETY: fds 0..2 were checked open at start and stay open.
        let stdio = [0, 1, 2].map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
        // A terminal tells its session only to its controlling terminal's
        // session (TIOCGSID): so these are the fds that are ours.
        let session = nix::unistd::getsid(None).ok()?;
        let on_pty = stdio.map(|fd| tcgetsid(fd).is_ok_and(|sid| sid == session));
        if !on_pty.contains(&true) {
            return None;
        }
        let user = open(
            "/dev/tty",
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let saved = tcgetattr(&user).ok()?;
        let size = sys::window_size(&user).ok();
        let pty = nix::pty::openpty(size.as_ref(), Some(&saved)).ok()?;
        sys::set_nonblocking(pty.master.as_fd()).ok()?;
        let foreground = tcgetpgrp(&user).is_ok_and(|pgrp| pgrp == getpgrp());
        let mut terminal = CallTerminal {
            user,
            master: pty.master,
            slave: Some(pty.slave),
            on_pty,
            saved,
            raw: false,
            pipeline,
            script_foreground: foreground && !pipeline,
            held_cr: false,
            user_gone: false,
            monitor_restores,
            monitor_told: false,
        };
        if terminal.script_foreground {
            terminal.take_keys_typed_ahead();
        }
        Some(terminal)
    }

    /// The keys the caller's terminal has taken in and nobody has read
    /// (typed while the command before us ran, or while we started)
    /// onto the pseudo-terminal, while the script cannot have it yet,
    /// as input its line discipline does not echo again: the caller's
    /// already did, as it would have for a direct run, whose script then
    /// reads them as they are. From here on the caller's terminal is raw
    /// (that is how a line's start, not yet a whole line, can be read),
    /// so keys typed after this are echoed by the pseudo-terminal only.
    fn take_keys_typed_ahead(&mut self) {
        // At most this many reads of whole lines: a terminal that has hung
        // up reads as ends of input for ever.
        const MOST_LINES: usize = 256;
        let mut typed = Vec::new();
        let mut buf = [0u8; 4096];
        if self.saved.local_flags.contains(LocalFlags::ICANON) {
            // Whole lines first, as a direct run's reads would have them:
            // a read of nothing is an end of input typed (^D at a line's
            // start, kept as a NUL that raw mode would hand us as a key),
            // which goes on as the pseudo-terminal's own ^D.
            let eof = self.saved.control_chars[SpecialCharacterIndices::VEOF as usize];
            for _ in 0..MOST_LINES {
                match read(&self.user, &mut buf) {
                    Ok(0) if eof != libc::_POSIX_VDISABLE => typed.push(eof),
                    Ok(n) if n > 0 => typed.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
        }
        if !self.make_raw() {
            return self.pass_typed_ahead(&typed);
        }
        while let Ok(n @ 1..) = read(&self.user, &mut buf) {
            typed.extend_from_slice(&buf[..n]);
        }
        self.pass_typed_ahead(&typed);
    }

    /// `typed` into the pseudo-terminal with its echo off. Its line
    /// discipline takes input in later, in a kernel worker: a poll of
    /// the slave while none of it is readable yet waits for that worker
    /// (n_tty_poll), and the settings' change after it waits for a
    /// worker still taking it in (the terminal's termios lock), so no
    /// key is taken in with the echo back on. (Input past one kernel
    /// buffer, about 2 KiB, may be: a paste, not typing.)
    fn pass_typed_ahead(&self, typed: &[u8]) {
        let Some(slave) = &self.slave else { return };
        if typed.is_empty() {
            return;
        }
        let mut quiet = self.saved.clone();
        quiet
            .local_flags
            .remove(LocalFlags::ECHO | LocalFlags::ECHONL);
        let quieted = tcsetattr(&self.master, SetArg::TCSANOW, &quiet).is_ok();
        let mut keys = Buffer {
            bytes: typed.to_vec(),
            sent: 0,
        };
        while keys.drain(&self.master).is_ok() && !keys.is_empty() {
            let mut writable = [PollFd::new(self.master.as_fd(), PollFlags::POLLOUT)];
            if poll(&mut writable, PollTimeout::NONE).is_err() {
                break;
            }
        }
        if quieted {
            let mut taken_in = [PollFd::new(slave.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut taken_in, PollTimeout::ZERO);
            let _ = tcsetattr(&self.master, SetArg::TCSANOW, &self.saved);
        }
    }

    /// Which of fds 0, 1, 2 go as the pseudo-terminal.
    pub(crate) fn on_pty(&self) -> [bool; 3] {
        self.on_pty
    }

    /// Whether the script starts in its terminal's background: we are in
    /// a pipeline, or in the background ourselves.
    pub(crate) fn starts_in_background(&self) -> bool {
        !self.script_foreground
    }

    /// What the executor gets as fd `fd`.
    pub(crate) fn stdio(&self, fd: usize) -> BorrowedFd<'_> {
        match &self.slave {
            Some(slave) if self.on_pty[fd] => slave.as_fd(),
            // SAFETY: fds 0..2 were checked open at start and stay open.
            _ => unsafe { BorrowedFd::borrow_raw(fd as i32) },
        }
    }

    /// Whether our process group is the caller's terminal's foreground.
    fn foreground(&self) -> bool {
        tcgetpgrp(&self.user).is_ok_and(|pgrp| pgrp == getpgrp())
    }

    /// At the start, and after each SIGCONT: the script's place on its
    /// terminal follows ours. We in the foreground: the script too
    /// (unless in a pipeline, where it comes there once it uses its
    /// terminal), and the caller's terminal raw. We in the background:
    /// the script's group in its terminal's background, so that reading
    /// it stops the script as it would a direct run's; the caller's
    /// terminal left alone. Says whether keys are ours to read.
    ///
    /// Resumed in the foreground, the script finds its terminal set as
    /// the caller's is now, as a direct run would: a shell gives a job it
    /// continues the terminal in the shell's settings, not in those the
    /// job had when it stopped.
    fn follow(&mut self, conn: &UnixStream, resumed: bool) -> bool {
        self.pass_window_size();
        if !self.foreground() {
            if self.script_foreground {
                self.script_foreground = false;
                send_frame(conn, Frame::Foreground(false));
            }
            return false;
        }
        if !self.script_foreground && !self.pipeline {
            return self.bring_script_forward(conn);
        }
        if !self.script_foreground {
            return false;
        }
        if resumed {
            self.pass_settings();
        }
        self.take_raw(conn)
    }

    /// In the foreground: the caller's terminal's settings onto the
    /// script's, the caller's terminal raw, and the script's group its
    /// terminal's foreground. Says whether keys are ours. (Until now the
    /// script could not have changed its terminal's settings: from the
    /// background that stops it.)
    fn bring_script_forward(&mut self, conn: &UnixStream) -> bool {
        self.pass_settings();
        let raw = self.take_raw(conn);
        self.script_foreground = true;
        send_frame(conn, Frame::Foreground(true));
        raw
    }

    /// The caller's terminal in raw mode, its current settings saved (and,
    /// with `restore`, given to the monitor with the raw ones as the
    /// terminal has them: should we be killed, it puts them back).
    fn take_raw(&mut self, conn: &UnixStream) -> bool {
        if !self.make_raw() {
            return false;
        }
        if self.monitor_restores && !self.monitor_told {
            // As the kernel has them (it may not take every bit).
            if let Ok(left) = tcgetattr(&self.user) {
                let settings = protocol::encode_restore(
                    &sys::terminal_settings(&self.saved),
                    &sys::terminal_settings(&left),
                );
                let _ =
                    protocol::io::send_all(conn, &Frame::Restore(settings.len() as u32).encode())
                        .and_then(|()| protocol::io::send_all(conn, &settings))
                        .and_then(|()| {
                            protocol::io::send_fd(conn, protocol::FD_MESSAGE_BYTE, &self.user)
                        });
            }
            self.monitor_told = true;
        }
        true
    }

    /// The caller's terminal in raw mode, its current settings saved.
    fn make_raw(&mut self) -> bool {
        if !self.raw {
            let Ok(current) = tcgetattr(&self.user) else {
                return false;
            };
            let mut raw = current.clone();
            cfmakeraw(&mut raw);
            if self.pipeline {
                // The other processes of our job write to this terminal
                // too: their line ends still need translating.
                raw.output_flags = current.output_flags;
            }
            if set_attributes(&self.user, &raw).is_err() {
                return false;
            }
            self.saved = current;
            self.raw = true;
            self.monitor_told = false;
        }
        true
    }

    /// The caller's terminal as it was before we took it.
    pub(crate) fn restore(&mut self) {
        if self.raw {
            let _ = set_attributes(&self.user, &self.saved);
            self.raw = false;
        }
    }

    /// The caller's terminal as it was before we took it, and the monitor
    /// told so ('R' 0) if it had what to put back: it holds the terminal
    /// until then, even once our status has gone (should we be killed
    /// before this, it puts the settings back).
    fn restore_and_tell(&mut self, conn: &UnixStream) {
        self.restore();
        if self.monitor_told {
            send_frame(conn, Frame::Restore(0));
            self.monitor_told = false;
        }
    }

    /// The caller's terminal's settings (as they were before we made it
    /// raw) onto the pseudo-terminal.
    fn pass_settings(&self) {
        let settings = match self.raw {
            true => Ok(self.saved.clone()),
            false => tcgetattr(&self.user),
        };
        if let Ok(settings) = settings {
            let _ = tcsetattr(&self.master, SetArg::TCSANOW, &settings);
        }
    }

    /// The caller's window size onto the pseudo-terminal (whose line
    /// discipline then sends SIGWINCH to the script if it changed).
    fn pass_window_size(&self) {
        if let Ok(size) = sys::window_size(&self.user) {
            let _ = sys::set_window_size(&self.master, &size);
        }
    }

    /// The relay, once the request is sent: keys to the script, its
    /// output to the caller, our signals passed on (SIGWINCH as a size),
    /// its stops as ours, until its status has come and its output is
    /// all out. Returns the status, with the caller's terminal restored.
    pub(crate) fn relay(
        &mut self,
        conn: &UnixStream,
        signals: &SignalFd,
    ) -> io::Result<WaitStatus> {
        // Our copy goes, or the master would never report the script's end.
        self.slave = None;
        let result = self.relay_until_done(conn, signals);
        self.restore_and_tell(conn);
        result
    }

    fn relay_until_done(
        &mut self,
        conn: &UnixStream,
        signals: &SignalFd,
    ) -> io::Result<WaitStatus> {
        let mut keys = Buffer::default();
        let mut output = Buffer::default();
        let mut reading_keys = self.follow(conn, false);
        let mut master_open = true;
        let mut status: Option<WaitStatus> = None;
        let mut last_output = Instant::now();
        loop {
            if let Some(status) = status
                && output.is_empty()
                && (!master_open || last_output.elapsed() >= LINGER)
            {
                return Ok(status);
            }
            let want_keys = reading_keys && !self.user_gone && status.is_none() && keys.is_empty();
            let wanted = [
                (signals.as_fd(), PollFlags::POLLIN),
                (conn.as_fd(), events(status.is_none(), false)),
                (
                    self.master.as_fd(),
                    events(master_open && output.is_empty(), !keys.is_empty()),
                ),
                (self.user.as_fd(), events(want_keys, !output.is_empty())),
            ];
            let timeout = match status {
                Some(_) => sys::poll_timeout(LINGER.saturating_sub(last_output.elapsed())),
                None => PollTimeout::NONE,
            };
            // An fd we want nothing from stays out: poll reports a hang-up
            // (the master's once the script has gone, the monitor's once it
            // has said all) whatever is asked, and we would spin on it.
            let mut fds: Vec<PollFd<'_>> = wanted
                .iter()
                .filter(|(_, interest)| !interest.is_empty())
                .map(|&(fd, interest)| PollFd::new(fd, interest))
                .collect();
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let mut found = fds
                .iter()
                .map(|fd| fd.revents().unwrap_or(PollFlags::empty()));
            let [sig, from_monitor, master, user] =
                wanted.map(|(_, interest)| match interest.is_empty() {
                    true => PollFlags::empty(),
                    false => found.next().unwrap_or(PollFlags::empty()),
                });

            if sig.contains(PollFlags::POLLIN) {
                self.pass_signals(conn, signals, &mut reading_keys);
            }
            // (Once the status has come, the monitor's hang-up is no news.)
            if status.is_none() && !from_monitor.is_empty() {
                match protocol::io::read_frame(conn)? {
                    Frame::Status(value) => status = Some(value),
                    Frame::Stopped(signal) => {
                        reading_keys =
                            self.script_stopped(conn, signal, &mut output, &mut master_open);
                    }
                    _ => {} // 'P', or a kind from a later version
                }
            }
            let ready = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
            if master_open && (master.intersects(ready) || user.contains(PollFlags::POLLOUT)) {
                let pumped = self.pump_output(&mut output);
                last_output = if pumped.read {
                    Instant::now()
                } else {
                    last_output
                };
                master_open = !pumped.master_done;
            } else if user.contains(PollFlags::POLLOUT) {
                self.drain_output(&mut output);
            }
            // Keys, likewise.
            if master.contains(PollFlags::POLLOUT) || (want_keys && user.intersects(ready)) {
                self.pump_keys(&mut keys, want_keys);
            }
        }
    }

    /// The script has stopped by `signal`: a terminal access from its
    /// terminal's background brings it forward if we are in the
    /// foreground; any other stop stops us too, with the caller's
    /// terminal as it was. Says whether keys are ours to read.
    fn script_stopped(
        &mut self,
        conn: &UnixStream,
        signal: i32,
        output: &mut Buffer,
        master_open: &mut bool,
    ) -> bool {
        if is_terminal_access(signal) && self.foreground() {
            // In its terminal's background, it used it: it comes
            // forward, as we are. (Or it did so just before it came
            // forward: the keeper continues it again.)
            return self.bring_script_forward(conn);
        }
        // What it wrote up to its stop (the echo of ^Z, say) goes out
        // first, as far as it goes now.
        if self.pump_output(output).master_done {
            *master_open = false;
        }
        // Stopped, the terminal is our shell's.
        self.restore_and_tell(conn);
        stop_our_group(signal);
        // Resumed: the SIGCONT waiting in the signalfd takes the terminal
        // again if it is ours.
        false
    }

    /// Our signals, as they came: SIGWINCH as a window size, SIGCONT as
    /// a move where we now are (or passed on), the rest passed on.
    fn pass_signals(&mut self, conn: &UnixStream, signals: &SignalFd, reading_keys: &mut bool) {
        for signal in read_signals(signals) {
            match signal {
                libc::SIGWINCH => self.pass_window_size(),
                libc::SIGCONT => {
                    let moved = self.script_foreground;
                    *reading_keys = self.follow(conn, true);
                    // A move continues the script once it is made (the
                    // keeper's); else we pass it on.
                    if moved == self.script_foreground {
                        send_frame(conn, Frame::Signal(signal));
                    }
                }
                _ => send_frame(conn, Frame::Signal(signal)),
            }
        }
    }

    /// Keys from the caller's terminal to the script's, as far as each
    /// goes without blocking (`want_keys`: we may read more).
    fn pump_keys(&mut self, keys: &mut Buffer, want_keys: bool) {
        loop {
            if !keys.is_empty() {
                if keys.drain(&self.master).is_err() {
                    keys.clear();
                }
                if !keys.is_empty() {
                    return;
                }
            }
            if !want_keys {
                return;
            }
            match keys.fill(&self.user) {
                Ok(true) => {}
                Ok(false) => return,
                Err(_) => {
                    self.user_gone = true;
                    return;
                }
            }
        }
    }

    /// One read of the script's output. Where the caller's terminal
    /// still translates line ends (we are in the background, or in a
    /// pipeline), the pseudo-terminal's own translation is undone, so
    /// that the caller's terminal gets what a direct run's would.
    fn fill_output(&mut self, output: &mut Buffer) -> io::Result<bool> {
        let read = output.fill(&self.master);
        if !self.held_cr && !matches!(read, Ok(true)) {
            return read;
        }
        if self.raw && !self.pipeline || !self.both_translate_line_ends() {
            if std::mem::take(&mut self.held_cr) {
                output.bytes.insert(0, b'\r');
            }
            return read.map(|_| true);
        }
        let more = matches!(read, Ok(true));
        self.held_cr = undo_onlcr(&mut output.bytes, self.held_cr, more);
        match read {
            Ok(_) => Ok(!output.is_empty() || more),
            Err(e) if output.is_empty() => Err(e),
            // What was held back goes out first; the error comes again.
            Err(_) => Ok(true),
        }
    }

    /// Whether the caller's terminal and the script's both turn "\n" into
    /// "\r\n" on output (OPOST and ONLCR).
    fn both_translate_line_ends(&self) -> bool {
        use nix::sys::termios::OutputFlags;
        let onlcr = |t: Termios| {
            t.output_flags
                .contains(OutputFlags::OPOST | OutputFlags::ONLCR)
        };
        tcgetattr(&self.user).is_ok_and(onlcr) && tcgetattr(&self.master).is_ok_and(onlcr)
    }

    /// The script's output to the caller's terminal, as long as both
    /// sides go along, without polling in between (a pty hands over at
    /// most 4 KB a read).
    fn pump_output(&mut self, output: &mut Buffer) -> Pumped {
        let mut pumped = Pumped::default();
        loop {
            if !output.is_empty() {
                self.drain_output(output);
                if !output.is_empty() {
                    return pumped;
                }
            }
            match self.fill_output(output) {
                Ok(true) => pumped.read = true,
                Ok(false) => return pumped,
                // EIO: no process holds the slave any more.
                Err(_) => {
                    pumped.master_done = true;
                    return pumped;
                }
            }
        }
    }

    /// Writes what output it can to the caller's terminal; if that has
    /// gone, there is nobody to show it to.
    fn drain_output(&mut self, output: &mut Buffer) {
        if output.drain(&self.user).is_err() {
            output.clear();
            self.user_gone = true;
        }
    }
}

/// What one [`CallTerminal::pump_output`] did.
#[derive(Default)]
struct Pumped {
    /// Some output was read.
    read: bool,
    /// The master reported the end: nothing more will come.
    master_done: bool,
}

impl Drop for CallTerminal {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Poll events: readable and/or writable.
fn events(readable: bool, writable: bool) -> PollFlags {
    let mut flags = PollFlags::empty();
    if readable {
        flags |= PollFlags::POLLIN;
    }
    if writable {
        flags |= PollFlags::POLLOUT;
    }
    flags
}

/// tcsetattr on the caller's terminal, also from the background: with
/// SIGTTOU blocked the kernel lets it through instead of stopping us.
fn set_attributes(fd: &OwnedFd, termios: &Termios) -> nix::Result<()> {
    let ttou = SigSet::from(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old))?;
    let result = tcsetattr(fd, SetArg::TCSADRAIN, termios);
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    result
}

/// Stops our process group by `signal`, as the terminal would have
/// stopped a direct run's job (our shell, or a script that ran us
/// without job control, sees it); returns once continued.
fn stop_our_group(signal: i32) {
    let signal = match Signal::try_from(signal) {
        Ok(s @ (Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU)) => s,
        _ => Signal::SIGSTOP,
    };
    if signal == Signal::SIGSTOP {
        let _ = killpg(getpgrp(), signal);
        return;
    }
    // Its default action, and unblocked (SIGTSTP is one we pass on), just
    // for this: a signal a process sends its own group reaches it before
    // kill returns.
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_DFL runs no code of ours; the old action goes back below.
    let old_action = unsafe { sigaction(signal, &default) };
    let mut old_mask = SigSet::empty();
    let _ = pthread_sigmask(
        SigmaskHow::SIG_UNBLOCK,
        Some(&SigSet::from(signal)),
        Some(&mut old_mask),
    );
    let _ = killpg(getpgrp(), signal);
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    if let Ok(old) = old_action {
        // SAFETY: reinstating what sigaction gave us.
        let _ = unsafe { sigaction(signal, &old) };
    }
}

/// Every signal waiting in the (non-blocking) signalfd.
pub(super) fn read_signals(signals: &SignalFd) -> Vec<i32> {
    let mut found = Vec::new();
    while let Ok(Some(info)) = signals.read_signal() {
        found.push(info.ssi_signo as i32);
    }
    found
}

/// Undoes a terminal's ONLCR in `bytes`: each "\r\n" becomes "\n".
/// `held` says a "\r" was held back from the previous read (it goes
/// first, unless a "\n" follows it); a "\r" ending these bytes is held
/// back in turn while `more` may follow (returned as the new `held`).
fn undo_onlcr(bytes: &mut Vec<u8>, held: bool, more: bool) -> bool {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    if held && bytes.first() != Some(&b'\n') {
        out.push(b'\r');
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1; // the "\n" is pushed next
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    let hold = more && out.last() == Some(&b'\r') && bytes.last() == Some(&b'\r');
    if hold {
        out.pop();
    }
    *bytes = out;
    hold
}

/// A frame to the monitor, which may be gone: its EOF says so.
pub(super) fn send_frame(conn: &UnixStream, frame: Frame) {
    let _ = protocol::io::send_all(conn, &frame.encode());
}

/// A stop by a terminal's job control for a background group's access.
fn is_terminal_access(signal: i32) -> bool {
    signal == libc::SIGTTIN || signal == libc::SIGTTOU
}

/// Bytes on their way from one fd to another.
#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    sent: usize,
}

impl Buffer {
    fn is_empty(&self) -> bool {
        self.sent == self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.sent = 0;
    }

    /// One read into the (empty) buffer. `Ok(false)`: nothing there now.
    /// Errors, and EOF as `UnexpectedEof`: the fd has nothing more.
    fn fill(&mut self, from: &impl AsFd) -> io::Result<bool> {
        self.clear();
        self.bytes.resize(64 * 1024, 0);
        match read(from.as_fd(), &mut self.bytes) {
            Ok(0) => {
                self.bytes.clear();
                Err(io::ErrorKind::UnexpectedEof.into())
            }
            Ok(n) => {
                self.bytes.truncate(n);
                Ok(true)
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {
                self.bytes.clear();
                Ok(false)
            }
            Err(e) => {
                self.bytes.clear();
                Err(e.into())
            }
        }
    }

    /// Writes what it can without blocking.
    fn drain(&mut self, to: &impl AsFd) -> io::Result<()> {
        while !self.is_empty() {
            match write(to.as_fd(), &self.bytes[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::undo_onlcr;

    fn undo(chunks: &[&[u8]]) -> Vec<u8> {
        let mut held = false;
        let mut all = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut bytes = chunk.to_vec();
            held = undo_onlcr(&mut bytes, held, !chunk.is_empty() && i + 1 < chunks.len());
            all.extend(bytes);
        }
        all
    }

    #[test]
    fn onlcr_undone_across_reads() {
        assert_eq!(undo(&[b"a\r\nb\r\n"]), b"a\nb\n");
        assert_eq!(undo(&[b"a\r", b"\nb"]), b"a\nb");
        assert_eq!(undo(&[b"50%\r", b"60%\r"]), b"50%\r60%\r");
        assert_eq!(undo(&[b"x\r\r\n"]), b"x\r\n");
        assert_eq!(undo(&[b"\r"]), b"\r");
        assert_eq!(undo(&[b"a\r", b"", b"\n"]), b"a\r\n");
    }
}
