# frozen_string_literal: true

# The bytes on the wire (man/prefork-interp.7): pure encoders and
# decoders, no I/O, the standard library only. Named as the Python side's
# prefork_interp/_wire.py (function for function, constant for constant)
# and the Rust side's src/protocol/codec.rs; sides/wire-vectors.json pins
# them (test/test_wire.rb). A decoder's error is a ProtocolError whose
# kind is Rust's ProtocolError variant. Byte strings come back binary
# (Encoding::BINARY); Python's tuples are Arrays here, its dicts Hashes
# with symbol keys.

require "digest"

module PreforkInterp
  # The wire codec: constants, pure functions (Wire.decode_setup_env,
  # Wire.encode_frame, ...) and ProtocolError.
  module Wire
    ENV_VAR = "PREFORK_INTERP"
    VERSION = "v1".b.freeze
    GREETING_MAGIC = "PFI\n".b.freeze
    # Greeting xdata a client reads at most; request payloads at most.
    MAX_XDATA_LEN = 64 * 1024
    MAX_PAYLOAD_LEN = 64 * 1024 * 1024
    CAPS_MAGIC = "pfi-caps 1".b.freeze
    # Negotiated extensions, offered to a client that declared them.
    OUR_CAPS = %w[signals context tty limits closed dispositions watch restore].freeze
    SETUP_CAPS_PREFIX = "pfi-caps=".b.freeze
    # The setup environment's word bounding the server's idle time (seconds).
    SETUP_IDLE_PREFIX = "pfi-idle=".b.freeze
    SETUP_KEEPER_PREFIX = "pfi-keeper=".b.freeze
    # The keeper program's first argument (then the script's pid).
    KEEPER_ARGUMENT = "--session-keeper".b.freeze

    # The request byte: 0 (v1), or 1 (extended) with these flags.
    REQUEST_BYTE = 0x00
    REQUEST_BYTE_EXTENDED = 0x01
    REQUEST_FLAG_CONTEXT = 0x02
    # fd 0, 1, 2 as sent is the slave of the call's own pseudo-terminal.
    REQUEST_FLAG_PTY = [0x04, 0x08, 0x10].freeze
    REQUEST_ANY_PTY = 0x04 | 0x08 | 0x10
    # With a pty flag: the script starts in its terminal's background (the
    # client is in a pipeline, or in the background itself).
    REQUEST_FLAG_PTY_BACKGROUND = 0x20
    # A limits message follows the payload and the context message
    # (capability "limits"): the caller's resource limits, nice value and
    # oom_score_adj.
    REQUEST_FLAG_LIMITS = 0x40
    # A second flags byte follows the request byte at once (capability
    # "closed"): its bits say the caller's fd 0, 1, 2 is closed (and the fd
    # sent for it, /dev/null, is to be closed).
    REQUEST_FLAG_SECOND_BYTE = 0x80
    REQUEST_SECOND_CLOSED = [0x01, 0x02, 0x04].freeze
    REQUEST_ANY_SECOND_CLOSED = 0x01 | 0x02 | 0x04
    # Also in the second byte (capability "dispositions"): a caller-signals
    # message follows, last: u64be ignored, u64be blocked (bit n-1: signal
    # n, 1 to MAX_SIGNAL).
    REQUEST_SECOND_CALLER_SIGNALS = 0x08
    CALLER_SIGNALS_LEN = 16
    MAX_SIGNAL = 64
    # The one byte of every message carrying an fd (Rust's
    # FD_MESSAGE_BYTE): a call handed over, fds 0, 1, 2 of a request, the
    # context message's directory.
    FD_MESSAGE_BYTE = "\0".b.freeze

    # Monitor to server, one byte each: a call has ended; a call ended
    # before its script ran (no request: a listing, a caller that went
    # elsewhere).
    MONITOR_CALL_ENDED = "d".b.freeze
    MONITOR_CALL_DROPPED = "h".b.freeze
    # Executor to monitor: the call runs ('r', the request byte, and on a
    # pseudo-terminal of its own the script's pid).
    EXECUTOR_READY = "r".b.freeze
    # Frames between keeper and monitor: the script stopped ('t', signal);
    # ended ('x', wait status); monitor to keeper: to the foreground or not.
    KEEPER_STOPPED = "t".b.freeze
    KEEPER_STATUS = "x".b.freeze
    KEEPER_FOREGROUND = "f".b.freeze
    # Frames between client and monitor: kind, u32be value.
    FRAME_LEN = 5
    FRAME_SIGNAL = "S".b.freeze
    FRAME_EXECUTOR_PID = "P".b.freeze
    FRAME_STATUS = "X".b.freeze
    FRAME_FOREGROUND = "F".b.freeze
    FRAME_STOPPED = "T".b.freeze
    # Client to monitor (capability "restore"): value N, then a restore
    # message of N bytes and, N > 0, FD_MESSAGE_BYTE carrying the caller's
    # terminal: the settings to put back on it if the client goes away
    # before 'X', and those the client left there. N = 0: nothing to put
    # back.
    FRAME_RESTORE = "R".b.freeze
    # Terminal settings: four flag words and two speeds, u32be each, then
    # the sender's control characters; a receiver takes at most 64 of
    # those (more than any platform has).
    TERMINAL_SETTINGS_FIXED = 24
    MAX_TERMINAL_SETTINGS = TERMINAL_SETTINGS_FIXED + 64
    # A restore message: a count C of control characters, then two
    # terminal settings of C control characters each.
    MAX_RESTORE_LEN = 1 + (2 * MAX_TERMINAL_SETTINGS)

    # No limit, on the wire; the oom_score_adj a caller could not read.
    RLIM_INFINITY = (2**64) - 1
    OOM_SCORE_UNKNOWN = -2**31
    LIMITS_ENTRY_LEN = 17
    LIMITS_TAIL_LEN = 8

    WORLD_NAMESPACES = %w[mnt pid net user uts ipc cgroup time].freeze

    # A terminal's settings (struct termios), as a restore message has
    # them: speeds are the platform's B* values, cc the sender's c_cc
    # (Integers). The encoders take a Hash with these symbol keys too.
    TerminalSettings = Struct.new(:iflag, :oflag, :cflag, :lflag, :ispeed, :ospeed, :cc)

    # The pack formats (Python's struct.Struct objects).
    FRAME_FORMAT = "a1N"
    U32_FORMAT = "N"
    I32_FORMAT = "l>"
    LIMITS_ENTRY_FORMAT = "CQ>Q>"
    LIMITS_TAIL_FORMAT = "l>l>"
    CALLER_SIGNALS_FORMAT = "Q>Q>"
    TERMINAL_SETTINGS_FIXED_FORMAT = "N6"
    TERMINAL_SETTINGS_WORDS = %i[iflag oflag cflag lflag ispeed ospeed].freeze
    private_constant :FRAME_FORMAT, :U32_FORMAT, :I32_FORMAT, :LIMITS_ENTRY_FORMAT,
                     :LIMITS_TAIL_FORMAT, :CALLER_SIGNALS_FORMAT,
                     :TERMINAL_SETTINGS_FIXED_FORMAT, :TERMINAL_SETTINGS_WORDS

    # A message that breaks the wire format. kind: Rust's ProtocolError
    # variant (BadRequestByte, BadSecondRequestByte, PayloadTooLong,
    # PayloadUnterminated, PayloadNoEnvEnd, BadLimits, BadSetupEnv,
    # BadExecutorMessage, BadTerminalSettings, BadRestore); the message
    # says what was wrong.
    class ProtocolError < StandardError
      attr_reader :kind

      def initialize(kind, message)
        super(message)
        @kind = kind
      end
    end

    module_function

    # -------------------------------------------------------------- greeting

    # The greeting: "PFI\n", u32be xdata length, xdata.
    def encode_greeting(xdata)
      cat(GREETING_MAGIC, [unsigned(xdata.bytesize, 32)].pack(U32_FORMAT), xdata)
    end

    # Our greeting's xdata ("" when nothing is offered: a v1 client
    # misreads any): the capabilities offered, `world DIGEST` (world: the
    # hex digest, or nil), `env DIGEST NAME...` (env: [digest, names] from
    # env_dependency, or nil; what initialisation read), `start DIGEST
    # NAME...` (likewise: what the interpreter read as it started),
    # `terminals N` (which of fds 0, 1, 2 were terminals in
    # initialisation: bit N for fd N; nil: no line), `degraded TEXT` (what
    # the server does without, such as inotify; one line, so each newline
    # a space; nil: no line), then the counters.
    def encode_greeting_xdata(offered, world, env, start, terminals, degraded, served, running,
                              idle_ms)
      return "".b if offered.nil? || offered.empty?

      xdata = cat(CAPS_MAGIC, "\ncaps ", offered.join(","), "\n")
      xdata << cat("world ", world, "\n") unless world.nil?
      xdata << dependency_line("env", env) << dependency_line("start", start)
      xdata << cat("terminals #{Integer(terminals)}\n") unless terminals.nil?
      xdata << cat("degraded ", degraded.b.tr("\n", " "), "\n") unless degraded.nil?
      xdata << cat("served #{Integer(served)}\nrunning #{Integer(running)}\n" \
                   "idle #{Integer(idle_ms)}\n")
    end

    # `KEYWORD DIGEST NAME...\n` for a dependency ([digest, names]), ""
    # for nil.
    def dependency_line(keyword, dependency)
      return "".b if dependency.nil?

      digest, names = dependency
      cat(keyword, " ", digest, " ", names.map(&:b).join(" "), "\n")
    end

    # Lowercase hex SHA-256 of NAME:INODE\n for each of WORLD_NAMESPACES
    # (namespaces: their inodes in that order, nil for `-`, unreadable),
    # then cgroup\n and cgroups (/proc/self/cgroup as it is).
    def world_digest(namespaces, cgroups)
      digest = Digest::SHA256.new
      WORLD_NAMESPACES.zip(namespaces).first(namespaces.length).each do |name, inode|
        digest.update("#{name}:#{inode.nil? ? '-' : Integer(inode)}\n")
      end
      digest.update("cgroup\n")
      digest.update(cgroups)
      digest.hexdigest
    end

    # Whether a variable read can be a dependency: not PREFORK_INTERP, nor
    # a name the line cannot carry (space, newline) or no environment can
    # hold (empty, '=', NUL).
    def trackable_env_name(name)
      name = binary(name)
      !name.empty? && name != ENV_VAR && !name.match?(/[ \n=\0]/)
    end

    # [digest, names] for the names read (any order, repeats and
    # untrackable ones dropped), value_of[name] their values (binary
    # Strings, or nil for unset: a Hash, a Proc, a Method); nil for no
    # names.
    def env_dependency(names, value_of)
      names = names.map { |name| binary(name) }.select { |name| trackable_env_name(name) }
      names = names.uniq.sort
      return nil if names.empty?

      [env_digest(names, value_of), names]
    end

    # Lowercase hex SHA-256 of NAME=VALUE\0 (NAME\0 if unset) for each
    # name, in the order given.
    def env_digest(names, value_of)
      digest = Digest::SHA256.new
      names.each do |name|
        value = value_of[name]
        digest.update(value.nil? ? cat(name, "\0") : cat(name, "=", value, "\0"))
      end
      digest.hexdigest
    end

    # ----------------------------------------------------- the setup run's env

    # PREFORK_INTERP=v1,SECS.NSECS LISTEN,CALL,WATCHI,WATCHE [pfi-caps=...]
    # [pfi-idle=SECONDS] [pfi-keeper=HEX] as a Hash: started_secs,
    # started_nsecs, listen, call, watch_in, watch_err, client_caps (an
    # Array), idle_limit (seconds, or nil), keeper (a binary String: a
    # program's path, or nil; from pfi-keeper=HEX). The fd order is
    # chiark-utils' client's: WATCHI is the write end of the watcher's
    # stdin, WATCHE the read end of its stderr. Extra words and items are
    # ignored, and so is a malformed idle bound or keeper word (as an
    # unknown word would be).
    def decode_setup_env(value)
      words = split_bytes(binary(value), / /)
      raise bad_setup_env("expected two words") if words.length < 2

      secs, nsecs = setup_start_time(words[0])
      listen, call, watch_in, watch_err = setup_fds(words[1])
      # Our client adds "pfi-caps=NAME,...": it reads greeting xdata.
      caps = setup_word(words, SETUP_CAPS_PREFIX)
      client_caps = caps.nil? ? [] : split_bytes(caps, ",").reject(&:empty?).map { |c| ascii_text(c) }
      # And for a folded identity's server "pfi-idle=SECONDS".
      idle = setup_word(words, SETUP_IDLE_PREFIX)
      # And "pfi-keeper=HEX": its own path, to run as a session's keeper.
      keeper = setup_word(words, SETUP_KEEPER_PREFIX)
      {
        started_secs: secs,
        started_nsecs: nsecs,
        listen: listen,
        call: call,
        watch_in: watch_in,
        watch_err: watch_err,
        client_caps: client_caps,
        idle_limit: decimal_u64(idle),
        keeper: hex_bytes(keeper)
      }
    end

    # The first word's version and start time: [secs, nsecs].
    def setup_start_time(word)
      items = split_bytes(word, ",")
      raise bad_setup_env("unsupported version #{ascii_text(items[0]).inspect} (expected v1)") if items[0] != VERSION
      raise bad_setup_env("no start time") if items.length < 2

      secs, dot, nsecs = items[1].partition(".")
      unless !dot.empty? && digits?(secs) && digits?(nsecs) && nsecs.bytesize == 9
        raise bad_setup_env("start time must be SECS.NSECS with 9 digits of nanoseconds")
      end

      [secs.to_i, nsecs.to_i]
    end

    # The second word's first four items: listen, call, watch_in,
    # watch_err.
    def setup_fds(word)
      fds = split_bytes(word, ",").first(4)
      unless fds.length == 4 && fds.all? { |fd| digits?(fd) }
        raise bad_setup_env("file descriptors must be four non-negative numbers")
      end

      fds.map(&:to_i)
    end

    def bad_setup_env(why)
      ProtocolError.new("BadSetupEnv", "prefork-interp: bad #{ENV_VAR}: #{why}")
    end

    # What follows prefix in the first word after the second that has it,
    # or nil.
    def setup_word(words, prefix)
      word = words.drop(2).find { |candidate| candidate.start_with?(prefix) }
      word&.byteslice(prefix.bytesize..)
    end

    # The bytes of a non-empty, even run of hex digits (either case: Rust's
    # decode_hex), else nil.
    def hex_bytes(digits)
      return nil if digits.nil? || digits.bytesize.odd? || !digits.match?(/\A[0-9a-fA-F]+\z/)

      [digits].pack("H*")
    end

    # A non-empty run of ASCII digits that fits in a u64 as a number (Rust's
    # parse_decimal), else nil.
    def decimal_u64(digits)
      return nil if digits.nil? || !digits?(digits)

      number = digits.to_i
      number < (1 << 64) ? number : nil
    end

    # ---------------------------------------------------------------- request

    # The byte that opens a request, checked: 0, or 0x01 with any of the
    # other flags, 0x20 only with a pty flag. Returned as it is (its flags
    # are tested as bits).
    def check_request_byte(byte)
      if byte.zero? || (byte.anybits?(REQUEST_BYTE_EXTENDED) &&
                        (byte.anybits?(REQUEST_ANY_PTY) || byte.nobits?(REQUEST_FLAG_PTY_BACKGROUND)))
        return byte
      end

      raise ProtocolError.new(
        "BadRequestByte",
        "request starts with byte #{format('%#04x', byte)}, expected 0x00, or 0x01 with flags " \
        "0x02, 0x04, 0x08, 0x10, 0x40, 0x80, and 0x20 with one of 0x04, 0x08, 0x10"
      )
    end

    def has_second_request_byte(byte)
      byte.anybits?(REQUEST_FLAG_SECOND_BYTE)
    end

    # The second request byte, checked: the caller's closed fds
    # (REQUEST_SECOND_CLOSED) and REQUEST_SECOND_CALLER_SIGNALS, 0 for
    # none. Returned as it is.
    def check_second_request_byte(byte)
      return byte if byte.nobits?(~(REQUEST_ANY_SECOND_CLOSED | REQUEST_SECOND_CALLER_SIGNALS))

      raise ProtocolError.new(
        "BadSecondRequestByte",
        "second request byte #{format('%#04x', byte)}, expected flags 0x01, 0x02, 0x04, 0x08"
      )
    end

    # The u32be before a request's payload.
    def decode_payload_len(prefix)
      length = exactly(prefix, 4).unpack1(U32_FORMAT)
      if length > MAX_PAYLOAD_LEN
        raise ProtocolError.new("PayloadTooLong",
                                "request too long (#{length} bytes, at most #{MAX_PAYLOAD_LEN})")
      end

      length
    end

    # Splits "NAME=value\0"... "\0" "arg\0"... into [env, args].
    def decode_payload(payload)
      payload = binary(payload)
      unless payload.end_with?("\0")
        raise ProtocolError.new("PayloadUnterminated", "request payload does not end with a NUL")
      end

      strings = split_bytes(payload.byteslice(0, payload.bytesize - 1), "\0")
      ending = strings.index("")
      if ending.nil?
        raise ProtocolError.new("PayloadNoEnvEnd",
                                "request payload has no empty string ending the environment")
      end

      [strings[0, ending], strings[(ending + 1)..]]
    end

    # [name, value]: an environment entry split at its first '=' after its
    # first byte (a leading '=' is the name's, as in glibc); nil without
    # one.
    def split_env_entry(entry)
      entry = binary(entry)
      eq = entry.index("=", 1)
      return nil if eq.nil?

      [entry.byteslice(0, eq), entry.byteslice((eq + 1)..)]
    end

    def encode_context_umask(umask)
      [unsigned(umask, 32)].pack(U32_FORMAT)
    end

    # The u32be umask after the context message's byte.
    def decode_context_umask(data)
      exactly(data, 4).unpack1(U32_FORMAT)
    end

    # What follows a limits message's count byte: count entries ([resource,
    # soft, hard]; RLIM_INFINITY for none) and nice, oom_score_adj
    # (OOM_SCORE_UNKNOWN: unknown), in exactly count * 17 + 8 bytes, as
    # [entries, nice, oom_score_adj].
    def decode_limits(count, body)
      size = count * LIMITS_ENTRY_LEN
      if body.bytesize != size + LIMITS_TAIL_LEN
        raise ProtocolError.new("BadLimits", "limits message of #{body.bytesize} bytes after its " \
                                             "count #{count}, expected #{size + LIMITS_TAIL_LEN}")
      end

      values = body.unpack((LIMITS_ENTRY_FORMAT * count) + LIMITS_TAIL_FORMAT)
      nice, oom = values.pop(2)
      [values.each_slice(3).to_a, nice, oom]
    end

    def signal_bits(numbers)
      numbers.reduce(0) do |bits, sig|
        raise ArgumentError, "signal #{sig} is not 1 to #{MAX_SIGNAL}" unless sig.between?(1, MAX_SIGNAL)

        bits | (1 << (sig - 1))
      end
    end

    # A caller-signals message from two Arrays of signal numbers.
    def encode_caller_signals(ignored, blocked)
      [signal_bits(ignored), signal_bits(blocked)].pack(CALLER_SIGNALS_FORMAT)
    end

    # A caller-signals message (CALLER_SIGNALS_LEN bytes; every bit pattern
    # is valid) as [ignored, blocked], Arrays of signal numbers, lowest
    # first.
    def decode_caller_signals(data)
      exactly(data, CALLER_SIGNALS_LEN).unpack(CALLER_SIGNALS_FORMAT).map do |bits|
        (1..MAX_SIGNAL).select { |sig| bits[sig - 1] == 1 }
      end
    end

    # ---------------------------------------------------------- status, frames

    # A wait status on the wire: u32be.
    def encode_status(wait_status)
      [wait_status & 0xFFFFFFFF].pack(U32_FORMAT)
    end

    # A wait status from the wire (read as signed, i32).
    def decode_status(data)
      exactly(data, 4).unpack1(I32_FORMAT)
    end

    # kind: one byte ("S"...); value: u32.
    def encode_frame(kind, value)
      kind = binary(kind)
      raise ArgumentError, "a frame's kind is one byte, not #{kind.bytesize}" if kind.bytesize != 1

      cat(kind, [value & 0xFFFFFFFF].pack(U32_FORMAT))
    end

    # [kind, value] of FRAME_LEN bytes; unknown kinds decode too.
    def decode_frame(frame)
      exactly(frame, FRAME_LEN).unpack(FRAME_FORMAT)
    end

    def encode_terminal_settings(settings)
      words = TERMINAL_SETTINGS_WORDS.map { |word| unsigned(settings[word], 32) }
      cat(words.pack(TERMINAL_SETTINGS_FIXED_FORMAT),
          settings[:cc].map { |char| unsigned(char, 8) }.pack("C*"))
    end

    # TerminalSettings (cc: an Array of Integers) from
    # TERMINAL_SETTINGS_FIXED to MAX_TERMINAL_SETTINGS bytes.
    def decode_terminal_settings(data)
      unless data.bytesize.between?(TERMINAL_SETTINGS_FIXED, MAX_TERMINAL_SETTINGS)
        raise ProtocolError.new("BadTerminalSettings",
                                "terminal settings of #{data.bytesize} bytes " \
                                "(#{TERMINAL_SETTINGS_FIXED} to #{MAX_TERMINAL_SETTINGS})")
      end

      words = data.unpack(TERMINAL_SETTINGS_FIXED_FORMAT)
      TerminalSettings.new(*words, data.byteslice(TERMINAL_SETTINGS_FIXED..).bytes)
    end

    def bad_restore(length)
      ProtocolError.new("BadRestore", "terminal restore message of #{length} bytes (a count C, " \
                                      "then twice 24 + C, C at most 64)")
    end

    # An 'R' frame's value (not 0), checked before its bytes are read: a
    # monitor waits for no more than a restore message can be.
    def check_restore_len(length)
      raise bad_restore(length) unless length.between?(1 + (2 * TERMINAL_SETTINGS_FIXED), MAX_RESTORE_LEN)

      length
    end

    # The bytes after an 'R' frame (whose value is their count): the count
    # of control characters (put_back's, at most 64), the settings to put
    # back, and those the client left on the terminal with as many control
    # characters (cut, or made up with zeros).
    def encode_restore(put_back, left)
      count = [put_back[:cc].length, MAX_TERMINAL_SETTINGS - TERMINAL_SETTINGS_FIXED].min
      left_cc = (left[:cc].to_a + ([0] * count)).first(count)
      cat([count].pack("C"),
          encode_terminal_settings(with_cc(put_back, put_back[:cc].first(count))),
          encode_terminal_settings(with_cc(left, left_cc)))
    end

    # A restore message as [put_back, left], TerminalSettings each.
    def decode_restore(data)
      raise bad_restore(0) if data.empty?

      block = TERMINAL_SETTINGS_FIXED + data.getbyte(0)
      raise bad_restore(data.bytesize) if block > MAX_TERMINAL_SETTINGS || data.bytesize != 1 + (2 * block)

      [decode_terminal_settings(data.byteslice(1, block)),
       decode_terminal_settings(data.byteslice((1 + block)..))]
    end

    # 'r', the request byte as read, and on a pseudo-terminal of its own
    # (script_pid) the script's pid.
    def encode_executor_ready(byte, script_pid = nil)
      message = cat(EXECUTOR_READY, [unsigned(byte, 8)].pack("C"))
      message << [unsigned(script_pid, 32)].pack(U32_FORMAT) unless script_pid.nil?
      message
    end

    # The request byte of an executor's 2-byte 'r' message (with a pty flag
    # the script's pid follows: decode_script_pid).
    def decode_executor_ready(message)
      message = binary(exactly(message, 2))
      said = message.byteslice(0, 1)
      if said != EXECUTOR_READY
        raise ProtocolError.new("BadExecutorMessage", "executor said #{said.inspect}, expected 'r'")
      end

      check_request_byte(message.getbyte(1))
    end

    def decode_script_pid(data)
      exactly(data, 4).unpack1(U32_FORMAT)
    end

    # The lock file beside a server's socket (BASE/s<ident> ->
    # BASE/l<ident>, binary), to which a quitting server appends its
    # encode_quit_line; nil for a socket not so named.
    def lock_path_for_socket(socket_path)
      folder, slash, name = binary(socket_path).rpartition("/")
      return nil unless name.start_with?("s") && name.bytesize >= 2

      cat(folder, slash, "l", name.byteslice(1..))
    end

    # The last well-formed `quit SECS REASON` line of a lock file's text as
    # [secs, reason], or nil: a server that quits because its socket went
    # reads it, since whoever removed the socket may have said why already.
    def decode_last_quit(text)
      split_bytes(binary(text), "\n").reverse_each do |line|
        next unless line.start_with?("quit ")

        secs, space, reason = line.byteslice(5..).partition(" ")
        number = decimal_u64(secs)
        return [number, reason] if !space.empty? && !number.nil?
      end
      nil
    end

    # What a quitting server appends to its lock file: `quit SECS REASON`,
    # each newline in REASON a space.
    def encode_quit_line(secs, reason)
      cat("quit #{Integer(secs)} ", binary(reason).tr("\n", " "), "\n")
    end

    # ------------------------------------------------------- binary helpers

    # data as a binary String (itself if it is one).
    def binary(data)
      data.encoding == Encoding::BINARY ? data : data.b
    end

    # The parts as one binary String.
    def cat(*parts)
      parts.map(&:b).join
    end

    # Python's bytes.split(separator): every part, empty ones too, and ""
    # for "".
    def split_bytes(data, separator)
      data.empty? ? [data] : data.split(separator, -1)
    end

    # A non-empty run of ASCII digits (Python's bytes.isdigit).
    def digits?(data)
      data.match?(/\A[0-9]+\z/)
    end

    # Bytes as text, each byte not ASCII U+FFFD (Python's
    # decode("ascii", "replace")).
    def ascii_text(data)
      data.encode(Encoding::UTF_8, Encoding::US_ASCII, invalid: :replace, undef: :replace)
    end

    # data, which must be size bytes (as Python's struct insists).
    def exactly(data, size)
      return data if data.bytesize == size

      raise ArgumentError, "#{data.bytesize} bytes, expected #{size}"
    end

    # value, which must fit in bits unsigned bits (as Python's struct
    # insists).
    def unsigned(value, bits)
      return value if value.between?(0, (1 << bits) - 1)

      raise RangeError, "#{value} does not fit in #{bits} unsigned bits"
    end

    # settings with other control characters, as TerminalSettings.
    def with_cc(settings, control_characters)
      TerminalSettings.new(*TERMINAL_SETTINGS_WORDS.map { |word| settings[word] }, control_characters)
    end

    private_class_method :dependency_line, :setup_start_time, :setup_fds, :bad_setup_env,
                         :setup_word, :hex_bytes, :decimal_u64, :signal_bits, :bad_restore,
                         :binary, :cat, :split_bytes, :digits?, :ascii_text, :exactly, :unsigned,
                         :with_cc
  end
end
