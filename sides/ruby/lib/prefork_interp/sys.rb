# frozen_string_literal: true

# Thin wrappers of what Ruby's core lacks or spells otherwise (as
# _sys.py's of what Python's os and signal modules lack): the C library
# through fiddle (prctl, signalfd, inotify, fflush, madvise, and what
# Python's os and signal modules have and Ruby's core lacks:
# pthread_sigmask, waitid, tcsetpgrp, tcgetpgrp, dup2 and close on fd
# numbers, the wait status macros), pidfds and close_range by system call
# number, closing every fd from one on, fd and thread checks, blocking
# socket I/O, fds passed with SCM_RIGHTS, and the signals a call's client
# may forward.

require "fiddle"
require "socket"

module PreforkInterp
  # The system's side: module functions (Sys.pidfd_open, Sys.signalfd,
  # Sys.sigmask, Sys.waitid, Sys.recv_fds...), constants, and Inotify.
  module Sys
    # The C library (all of this process's, as Python's
    # ctypes.CDLL(None)), for what Ruby's core lacks.
    LIBC = Fiddle::Handle::DEFAULT

    # Signals an extended client may have delivered to the executor's group
    # (Rust's FORWARDED_SIGNALS): the monitor ignores them, the executor gets
    # back what the server had.
    FORWARDED_SIGNALS = %w[INT TERM HUP QUIT USR1 USR2 WINCH ALRM TSTP CONT].map do |name|
      Signal.list.fetch(name)
    end.freeze
    # Signals a terminal sends its foreground group (Python's frozenset: an
    # Array here, lowest first, which `|`, `include?` and sigmask take).
    TERMINAL_SIGNALS = %w[INT QUIT TSTP TTIN TTOU WINCH HUP].map do |name|
      Signal.list.fetch(name)
    end.sort.freeze

    # System call numbers, x86_64 Linux (pidfd_open and close_range have
    # these numbers on every architecture: the tables agree from 424 on).
    SYS_PIDFD_OPEN = 434
    SYS_CLOSE_RANGE = 436

    # prctl(2)'s option: a signal when the parent (thread) goes.
    PR_SET_PDEATHSIG = 1
    # <fcntl.h>, x86_64 Linux: O_NONBLOCK, O_CLOEXEC (signalfd's and
    # inotify_init1's flags are these), F_GETFD.
    O_NONBLOCK = 0o4000
    O_CLOEXEC = 0o2000000
    F_GETFD = 1
    SFD_NONBLOCK_CLOEXEC = O_NONBLOCK | O_CLOEXEC
    # ioctl(2)'s request making a terminal the caller's controlling terminal
    # (<asm-generic/ioctls.h>; x86_64 too).
    TIOCSCTTY = 0x540E
    # recvmsg(2)'s flag: received fds close-on-exec.
    MSG_CMSG_CLOEXEC = 0x40000000

    # pthread_sigmask's how (signal.SIG_BLOCK...).
    SIG_BLOCK = 0
    SIG_UNBLOCK = 1
    SIG_SETMASK = 2

    # waitid's idtype (os.P_PID...), options (os.WEXITED...) and the
    # si_code of a child's report (os.CLD_STOPPED...), <sys/wait.h> and
    # <signal.h>.
    P_ALL = 0
    P_PID = 1
    P_PGID = 2
    P_PIDFD = 3
    WNOHANG = 1
    WSTOPPED = 2
    WUNTRACED = 2
    WEXITED = 4
    WCONTINUED = 8
    WNOWAIT = 0x1000000
    CLD_EXITED = 1
    CLD_KILLED = 2
    CLD_DUMPED = 3
    CLD_TRAPPED = 4
    CLD_STOPPED = 5
    CLD_CONTINUED = 6

    # Signal numbers a sigset_t holds here (Python's signal.NSIG - 1).
    MAX_SIGNAL = 64
    # A sigset_t: 128 bytes in glibc and musl; signal N at bit N-1 of its
    # first unsigned long (the kernel's layout, which both share).
    SIGSET_SIZE = 128
    # A siginfo_t: 128 bytes.
    SIGINFO_SIZE = 128

    # A function of the C library, or nil if it has none.
    def self.libc_function(name, args, ret)
      Fiddle::Function.new(LIBC[name], args, ret)
    rescue Fiddle::DLError
      nil
    end
    private_class_method :libc_function

    INT = Fiddle::TYPE_INT
    LONG = Fiddle::TYPE_LONG
    PTR = Fiddle::TYPE_VOIDP
    # The functions, looked up once. A variadic one (syscall, prctl,
    # fcntl) is called with its arguments as longs and ints: the same
    # registers on x86_64, where Fiddle before 1.0.1 (Ruby 2.7) has no
    # variadic calls.
    SYSCALL = libc_function("syscall", [LONG, LONG, LONG, LONG], LONG)
    PRCTL = libc_function("prctl", [INT, LONG, LONG, LONG, LONG], INT)
    FCNTL = libc_function("fcntl", [INT, INT, INT], INT)
    SIGNALFD = libc_function("signalfd", [INT, PTR, INT], INT)
    PTHREAD_SIGMASK = libc_function("pthread_sigmask", [INT, PTR, PTR], INT)
    WAITID = libc_function("waitid", [INT, INT, PTR, INT], INT)
    TCSETPGRP = libc_function("tcsetpgrp", [INT, INT], INT)
    TCGETPGRP = libc_function("tcgetpgrp", [INT], INT)
    DUP2 = libc_function("dup2", [INT, INT], INT)
    CLOSE = libc_function("close", [INT], INT)
    MADVISE = libc_function("madvise", [PTR, Fiddle::TYPE_SIZE_T, INT], INT)
    FFLUSH = libc_function("fflush", [PTR], INT)
    INOTIFY_INIT1 = libc_function("inotify_init1", [INT], INT)
    INOTIFY_ADD_WATCH = libc_function("inotify_add_watch", [INT, PTR, INT], INT)
    private_constant :INT, :LONG, :PTR, :SYSCALL, :PRCTL, :FCNTL, :SIGNALFD, :PTHREAD_SIGMASK,
                     :WAITID, :TCSETPGRP, :TCGETPGRP, :DUP2, :CLOSE, :MADVISE, :FFLUSH,
                     :INOTIFY_INIT1, :INOTIFY_ADD_WATCH

    # madvise's advice that faults a range in, writable (Linux 5.14 or later).
    MADV_POPULATE_WRITE = 23

    # inotify's event bits (linux/inotify.h) that the server asks for or reads.
    IN_MODIFY = 0x2
    IN_ATTRIB = 0x4
    IN_CLOSE_WRITE = 0x8
    IN_MOVED_FROM = 0x40
    IN_MOVED_TO = 0x80
    IN_CREATE = 0x100
    IN_DELETE = 0x200
    IN_DELETE_SELF = 0x400
    IN_MOVE_SELF = 0x800
    IN_Q_OVERFLOW = 0x4000
    IN_IGNORED = 0x8000

    # struct inotify_event: wd, mask, cookie, len; then len bytes of name.
    INOTIFY_EVENT_FORMAT = "lLLL"
    INOTIFY_EVENT_SIZE = 16
    private_constant :INOTIFY_EVENT_FORMAT, :INOTIFY_EVENT_SIZE

    module_function

    # os.pidfd_open(pid, flags): a pidfd (close-on-exec, as every pidfd
    # is), readable once the process has exited.
    def pidfd_open(pid, flags = 0)
      fd = call(SYSCALL, "pidfd_open", SYS_PIDFD_OPEN, Integer(pid), Integer(flags), 0)
      raise errno_error("pidfd_open") if fd.negative?

      fd
    end

    # PR_SET_PDEATHSIG: sig when the parent (thread) goes. (prctl, as the
    # Python side's, whose result it ignores.)
    def set_parent_death_signal(sig)
      call(PRCTL, "prctl", PR_SET_PDEATHSIG, signal_number(sig), 0, 0, 0)
      nil
    end

    # A non-blocking, close-on-exec signalfd for sig (blocked), an Integer:
    # Ruby's core has none (as Python's os and signal modules).
    def signalfd(sig)
      fd = call(SIGNALFD, "signalfd", -1, sigset([sig]), SFD_NONBLOCK_CLOEXEC)
      raise errno_error("signalfd") if fd.negative?

      fd
    end

    # Python's signal.pthread_sigmask(how, signals): this thread's signal
    # mask changed (SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK; signals: numbers or
    # names), the mask before as an Array of numbers, lowest first.
    def sigmask(how, signals)
      old = buffer(SIGSET_SIZE)
      err = call(PTHREAD_SIGMASK, "pthread_sigmask", Integer(how), sigset(signals), old)
      # pthread_sigmask says its error instead of setting errno.
      raise SystemCallError.new("pthread_sigmask", err) unless err.zero?

      bits = old[0, Fiddle::SIZEOF_LONG].unpack1("J")
      (1..MAX_SIGNAL).select { |sig| bits[sig - 1] == 1 }
    end

    # Python's os.waitid(idtype, id, options): nil if nothing is to be
    # reported (WNOHANG), else the child's report as a Hash: pid, uid,
    # signo (SIGCHLD), code (CLD_EXITED, CLD_STOPPED...) and status (the
    # exit status, or the signal), from siginfo_t (si_pid, si_uid,
    # si_signo, si_code, si_status). Retried on EINTR, as Python's.
    def waitid(idtype, id, options)
      loop do
        # Zeroed: si_pid stays 0 if nothing is reported.
        info = buffer(SIGINFO_SIZE)
        if call(WAITID, "waitid", Integer(idtype), Integer(id), info, Integer(options)).negative?
          err = Fiddle.last_error
          next if err == Errno::EINTR::Errno

          raise SystemCallError.new("waitid", err)
        end
        # int si_signo, si_errno, si_code; 4 bytes of padding (64-bit);
        # int si_pid; uint si_uid; int si_status.
        signo, code, pid, uid, status = info[0, 28].unpack("lx4lx4lLl")
        return nil if pid.zero?

        return { pid: pid, uid: uid, signo: signo, code: code, status: status }
      end
    end

    # Python's os.tcsetpgrp(fd, pgrp): the terminal's foreground process
    # group. (From a background group: SIGTTOU, unless it is blocked or
    # ignored, as in C.)
    def tcsetpgrp(fileno, pgrp)
      raise errno_error("tcsetpgrp") if call(TCSETPGRP, "tcsetpgrp", Integer(fileno), Integer(pgrp)).negative?

      nil
    end

    # Python's os.tcgetpgrp(fd): the terminal's foreground process group.
    def tcgetpgrp(fileno)
      pgrp = call(TCGETPGRP, "tcgetpgrp", Integer(fileno))
      raise errno_error("tcgetpgrp") if pgrp.negative?

      pgrp
    end

    # Python's fcntl.ioctl(fd, termios.TIOCSCTTY, 0): the terminal fd
    # becomes the controlling terminal of this session's leader (after
    # setsid). IO#ioctl on an IO that does not own the fd: nothing else
    # changes (no flag, no close).
    def take_controlling_terminal(fileno)
      IO.for_fd(Integer(fileno), autoclose: false).ioctl(TIOCSCTTY, 0)
      nil
    end

    # Python's socket.recv_fds(sock, bufsize, maxfds, flags): up to bufsize
    # bytes and the fds (Integers, close-on-exec; at most maxfds, the
    # kernel closes any more) that came with them, as [data, fds,
    # msg_flags, address]; data is "" at EOF. Blocks as sock.recvmsg does.
    def recv_fds(sock, bufsize, maxfds, flags = 0)
      # Room for maxfds ints (4 bytes each) after a cmsghdr, and no more
      # (CMSG_LEN, as Python's: CMSG_SPACE's padding would hold another).
      got = sock.recvmsg(bufsize, flags | MSG_CMSG_CLOEXEC, cmsg_len(4 * maxfds), scm_rights: true)
      # Ruby 3.3 says EOF with nil.
      return ["".b, [], 0, nil] if got.nil?

      data, address, msg_flags, *controls = got
      fds = []
      controls.each do |control|
        next unless control.cmsg_is?(:SOCKET, :RIGHTS)

        control.unix_rights.to_a.each do |io|
          # The fd is the caller's to close (as a Python int is), not the
          # GC's.
          io.autoclose = false
          fds << io.fileno
        end
      end
      [data.b, fds, msg_flags, address]
    end

    # Python's socket.send_fds(sock, buffers, fds, flags): data (a String,
    # or an Array of them, sent as one) with the fds (Integers) in one
    # SCM_RIGHTS message; the bytes sent.
    def send_fds(sock, data, fds, flags = 0)
      data = data.map(&:b).join if data.is_a?(Array)
      rights = Socket::AncillaryData.new(:UNIX, :SOCKET, :RIGHTS, fds.map { |fd| Integer(fd) }.pack("i*"))
      sock.sendmsg(data, flags, nil, rights)
    end

    # Python's os.dup2(fd, fd2): target becomes a copy of fileno,
    # inheritable; target.
    def dup2(fileno, target)
      loop do
        got = call(DUP2, "dup2", Integer(fileno), Integer(target))
        return got unless got.negative?
        next if Fiddle.last_error == Errno::EINTR::Errno

        raise errno_error("dup2")
      end
    end

    # Python's os.close(fd) on a number, which no Ruby IO owns.
    def close(fileno)
      raise errno_error("close") if call(CLOSE, "close", Integer(fileno)).negative?

      nil
    end

    # Closes every fd from first on: one close_range (Linux 5.9 or later),
    # else each fd /proc/self/fd lists, else each fd below the fd limit (at
    # least 1024). Ruby's IO objects for those fds first stop owning them
    # (autoclose off): the GC would close the numbers again, later, when
    # they may be something else's. Ruby's own fds (the eventfds its
    # signal handling and threads wake up with, from 3 on) go too: for a
    # process about to exit! (as the keeper is), as Python's has none.
    def close_range_from(first)
      disown_from(first)
      return if call(SYSCALL, "close_range", SYS_CLOSE_RANGE, first, 0xFFFFFFFF, 0).zero?

      open_fds.each { |fd| call(CLOSE, "close", fd) if fd >= first }
      nil
    end

    # Python's os.fstat(fd) succeeding: whether fd is open.
    def fd_is_open(fileno)
      !call(FCNTL, "fcntl", Integer(fileno), F_GETFD, 0).negative?
    end

    def thread_count
      Dir.children("/proc/self/task").length
    rescue SystemCallError
      1
    end

    # Sends all of data on a blocking socket; a SystemCallError
    # (Errno::EPIPE...) if the peer has gone, never SIGPIPE.
    def send_all(sock, data)
      data = data.b
      until data.empty?
        sent = sock.send(data, Socket::MSG_NOSIGNAL)
        data = data.byteslice(sent..)
      end
      nil
    end

    # Up to length bytes from a blocking socket: fewer at EOF or on an
    # error.
    def recv_exact(sock, length)
      data = "".b
      while data.bytesize < length
        begin
          chunk = sock.recv(length - data.bytesize)
        rescue SystemCallError, IOError
          break
        end
        # Ruby 3.3 says EOF with nil, older ones with "".
        break if chunk.nil? || chunk.empty?

        data << chunk.b
      end
      data
    end

    # madvise(MADV_POPULATE_WRITE) over [address, address + length): each
    # page there becomes this process's own, writable, copied now if it was
    # shared copy-on-write. 0, or the errno (EINVAL: a kernel before 5.14,
    # or a mapping it cannot populate; ENOMEM: not mapped, or out of
    # memory). Ruby's core has no madvise of an address range.
    def populate_write(address, length)
      return 0 if call(MADVISE, "madvise", Integer(address), Integer(length), MADV_POPULATE_WRITE).zero?

      err = Fiddle.last_error
      err.nil? || err.zero? ? Errno::EINVAL::Errno : err
    end

    # Every buffer, as exit would flush them: Ruby's own IOs' ($stdout and
    # $stderr first, then every other open one Ruby knows), then C stdio's
    # (a C extension's), which is all Python's flushes. Errors (a pipe
    # whose reader went) are left unsaid, as at exit.
    def fflush_all
      [$stdout, $stderr].each { |stream| flush_quietly(stream) }
      ObjectSpace.each_object(IO) do |io|
        flush_quietly(io) unless io.equal?($stdout) || io.equal?($stderr)
      end
      # (0: NULL, all streams; Ruby 2.7's Fiddle takes no nil for a pointer.)
      FFLUSH&.call(0)
      nil
    end

    # A wait status in words, for the log.
    def describe_status(status)
      status = status.to_i
      return format("exited with status %d", wexitstatus(status)) if wifexited(status)

      if wifsignaled(status)
        core = wcoredump(status) ? " (core dumped)" : ""
        return format("was killed by signal %<sig>d%<core>s", sig: wtermsig(status), core: core)
      end
      "has wait status #{status.negative? ? '-' : ''}0x#{status.abs.to_s(16)}"
    end

    # os.WIFEXITED and friends, for a wait status as a number (Ruby has
    # them only on a Process::Status).
    def wifexited(status)
      (status & 0x7F).zero?
    end

    def wexitstatus(status)
      (status >> 8) & 0xFF
    end

    def wifsignaled(status)
      sig = status & 0x7F
      sig != 0 && sig != 0x7F
    end

    def wtermsig(status)
      status & 0x7F
    end

    def wcoredump(status)
      status.anybits?(0x80)
    end

    def wifstopped(status)
      (status & 0xFF) == 0x7F
    end

    def wstopsig(status)
      (status >> 8) & 0xFF
    end

    # Signals a process group (os.killpg); best effort.
    def kill_group(pid, sig = Signal.list.fetch("INT"))
      # A negative signal is killpg in Ruby, as os.killpg (0 has no sign).
      sig = signal_number(sig)
      Process.kill(sig.zero? ? 0 : -sig, sig.zero? ? -pid : pid)
      nil
    rescue SystemCallError
      nil
    end

    # A signal's number: itself, or from its name ("INT", "SIGINT", :INT).
    def signal_number(sig)
      return sig if sig.is_a?(Integer)

      name = sig.to_s.delete_prefix("SIG")
      Signal.list.fetch(name) { raise ArgumentError, "unknown signal #{sig.inspect}" }
    end

    # -------------------------------------------------------------- helpers

    # function called, or ENOSYS (a C library without it; name says which).
    def call(function, name, *args)
      raise Errno::ENOSYS, name if function.nil?

      function.call(*args)
    end

    # The SystemCallError of the last call's errno (EINVAL if none).
    def errno_error(name)
      err = Fiddle.last_error
      SystemCallError.new(name, err.nil? || err.zero? ? Errno::EINVAL::Errno : err)
    end

    # size bytes of zeroed memory of the C library's, freed with the Pointer.
    def buffer(size)
      pointer = Fiddle::Pointer.malloc(size, Fiddle::RUBY_FREE)
      pointer[0, size] = "\0".b * size
      pointer
    end

    # A sigset_t holding signals (numbers or names; 1 to MAX_SIGNAL, as
    # Python's ValueError says otherwise).
    def sigset(signals)
      bits = Array(signals).reduce(0) do |set, sig|
        number = signal_number(sig)
        unless number.between?(1, MAX_SIGNAL)
          raise ArgumentError, "signal number #{number} out of range 1 to #{MAX_SIGNAL}"
        end

        set | (1 << (number - 1))
      end
      set = buffer(SIGSET_SIZE)
      set[0, Fiddle::SIZEOF_LONG] = [bits].pack("J")
      set
    end

    # CMSG_LEN(length) on 64-bit Linux: a 16-byte cmsghdr, then the data.
    def cmsg_len(length)
      16 + length
    end

    # Ruby's IO objects for fds from first on stop owning them.
    def disown_from(first)
      ObjectSpace.each_object(IO) do |io|
        io.autoclose = false if !io.closed? && io.fileno >= first
      rescue IOError, SystemCallError
        next
      end
    end

    # The fds /proc/self/fd lists, else every one below the fd limit (at
    # least 1024).
    def open_fds
      Dir.children("/proc/self/fd").map(&:to_i)
    rescue SystemCallError
      (0...[Process.getrlimit(:NOFILE)[0], 1024].max).to_a
    end

    def flush_quietly(stream)
      stream.flush if stream.respond_to?(:flush) && !(stream.respond_to?(:closed?) && stream.closed?)
    rescue IOError, SystemCallError
      nil
    end

    private_class_method :call, :errno_error, :buffer, :sigset, :cmsg_len, :disown_from, :open_fds,
                         :flush_quietly

    # An inotify instance (non-blocking, close-on-exec), or a
    # SystemCallError: the server's one, for the reload's files and its
    # socket's directory both (a user has 128 by default). fd: its number
    # (nil once closed); io: an IO on it, not owning it, for IO.select.
    class Inotify
      attr_reader :fd, :io

      def initialize
        # A C library without inotify: ENOSYS.
        raise Errno::ENOSYS, "inotify_init1" if INOTIFY_INIT1.nil? || INOTIFY_ADD_WATCH.nil?

        fd = INOTIFY_INIT1.call(O_NONBLOCK | O_CLOEXEC)
        raise Sys.send(:errno_error, "inotify_init1") if fd.negative?

        @fd = fd
        @io = IO.for_fd(fd, autoclose: false)
      end

      # The watch descriptor of path (the same for the same inode), or a
      # SystemCallError (Errno::ENOENT: no such file).
      def add_watch(path, mask)
        path = path.to_path if path.respond_to?(:to_path)
        path = path.b
        raise ArgumentError, "path contains a NUL byte" if path.include?("\0")

        wd = INOTIFY_ADD_WATCH.call(@fd, "#{path}\0", mask)
        raise Sys.send(:errno_error, path) if wd.negative?

        wd
      end

      # Every event pending, as [wd, mask, name]: name is "" for an event
      # on the watched file itself, else the name in the watched directory
      # (binary Strings).
      def read_events
        events = []
        loop do
          data = @io.read_nonblock(65_536, exception: false)
          return events if data.nil? || data == :wait_readable || data.empty?

          events.concat(Inotify.events(data))
        end
      end

      def close
        return if @fd.nil?

        @io.autoclose = true
        @io.close
        @io = nil
        @fd = nil
      end

      # The events of one read: whole events only, as the kernel gives.
      def self.events(data)
        data = data.b
        events = []
        at = 0
        while at + INOTIFY_EVENT_SIZE <= data.bytesize
          wd, mask, _, length = data.byteslice(at, INOTIFY_EVENT_SIZE).unpack(INOTIFY_EVENT_FORMAT)
          at += INOTIFY_EVENT_SIZE
          # The name is NUL-padded to an alignment.
          events << [wd, mask, data.byteslice(at, length).sub(/\0+\z/, "")]
          at += length
        end
        events
      end
    end
  end
end
