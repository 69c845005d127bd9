# frozen_string_literal: true

# The conformance agent for the Ruby script side. The harness
# (tests/common/mod.rs) makes a script of it: a #! line, a $LOAD_PATH line
# for sides/ruby/lib, then this file. Its language (initialisation
# variables AGENT_*, per-call commands @CMD[:PARAM]) is documented in
# tests/agents/agent.rs; keep the agents in step.

# Every AGENT_* setting is read here, before `require "prefork_interp"`
# starts tracking what initialisation reads (the greeting's `env` line):
# tests whose calls differ in them share one server.
SETTINGS = ENV.to_h.select { |name, _| name.start_with?("AGENT_") }.freeze
# Likewise the libraries it uses: RubyGems reads GEM_REQUIREMENT_NAME as
# it loads one, which would make every call depend on those variables.
require "English"
require "fiddle"
require "io/console"

require "prefork_interp"

sleep Float(SETTINGS["AGENT_INIT_SLEEP"]) if SETTINGS.key?("AGENT_INIT_SLEEP")
$stdout.write(SETTINGS["AGENT_INIT_PRINT"]) if SETTINGS.key?("AGENT_INIT_PRINT")
if SETTINGS.key?("AGENT_INIT_EXIT")
  warn "agent: failing initialisation as asked"
  exit Integer(SETTINGS["AGENT_INIT_EXIT"])
end
Thread.new { sleep 3600 } if SETTINGS.key?("AGENT_INIT_THREAD")
if SETTINGS.key?("AGENT_INIT_ATEXIT")
  record = SETTINGS["AGENT_INIT_ATEXIT"]
  at_exit { File.open(record, "a") { |f| f.write("exit\n") } }
end
if SETTINGS.key?("AGENT_INIT_SETENV")
  SETTINGS["AGENT_INIT_SETENV"].b.split(",").each do |entry|
    name, value = entry.split("=", 2)
    ENV[name] = value || ""
  end
end
SETTINGS["AGENT_INIT_UNSETENV"].b.split(",").each { |name| ENV.delete(name) } if SETTINGS.key?("AGENT_INIT_UNSETENV")

# Whether fd is open and a terminal.
def terminal?(fd)
  IO.for_fd(fd, autoclose: false).tty?
rescue SystemCallError, ArgumentError
  false
end

# Which of fds 0, 1, 2 initialisation had as terminals (@inittty).
INIT_TTY = (0..2).map { |fd| terminal?(fd) ? "1" : "0" }.join(" ").freeze
# The one tracked read: the variable it names, read the usual way.
INIT_ENV = (ENV[SETTINGS["AGENT_INIT_ENVREAD"]] if SETTINGS.key?("AGENT_INIT_ENVREAD"))

options = {}
options[:max_servers] = Integer(SETTINGS["AGENT_MAX_SERVERS"]) if SETTINGS.key?("AGENT_MAX_SERVERS")
options[:spare_handlers] = Integer(SETTINGS["AGENT_SPARE_HANDLERS"]) if SETTINGS.key?("AGENT_SPARE_HANDLERS")
options[:interrupt_grace] = Float(SETTINGS["AGENT_INTERRUPT_GRACE"]) if SETTINGS.key?("AGENT_INTERRUPT_GRACE")
options[:idle_timeout] = Float(SETTINGS["AGENT_IDLE_TIMEOUT"]) if SETTINGS.key?("AGENT_IDLE_TIMEOUT")
options[:autoreload_extra] = [SETTINGS["AGENT_RELOAD_EXTRA"]] if SETTINGS.key?("AGENT_RELOAD_EXTRA")

begin
  PreforkInterp.initialisation_complete(**options)
rescue StandardError => e
  warn "agent: #{e.message}"
  exit 127
end

# The curses program of @curses, the same in every agent.
CURSES_PY = <<~PYTHON
  import curses
  def main(screen):
      screen.addstr(0, 0, 'curses: press a key')
      screen.refresh()
      return screen.getch()
  print('curses got %d' % curses.wrapper(main))
PYTHON

# Linux's ioctl numbers (x86_64 and the other common ABIs).
TIOCGPGRP = 0x540F
TIOCGWINSZ = 0x5413

# SIG_DFL for signal (a name): through trap, or, for those Ruby keeps
# for itself (SEGV, BUS, ILL, FPE, VTALRM), through the C library.
def default_signal(name)
  trap(name, "SYSTEM_DEFAULT")
rescue ArgumentError
  signal = Fiddle::Function.new(Fiddle::Handle::DEFAULT["signal"],
                                [Fiddle::TYPE_INT, Fiddle::TYPE_VOIDP], Fiddle::TYPE_VOIDP)
  signal.call(Signal.list.fetch(name), 0)
end

# An error's name, as the agents print it (ENXIO).
def errno_name(error)
  error.class.name.split("::").last
end

# A child's end as the agents print it: its exit code or `signal N`.
def child_code(status)
  status.signaled? ? "signal #{status.termsig}" : status.exitstatus.to_s
end

def parent_of(pid)
  stat = File.read("/proc/#{pid}/stat")
  Integer(stat[(stat.rindex(")") + 2)..].split[1])
end

# The fds Ruby keeps for itself (its timer thread's eventfd, and from 3.3
# its epoll), which a fork makes again elsewhere.
RUBYS_OWN_FDS = ["anon_inode:[eventfd]", "anon_inode:[eventpoll]"].freeze

# Its open fds, space-separated (not the one listing them, nor Ruby's own).
def open_fds
  fds = Dir.children("/proc/self/fd").filter_map do |entry|
    target = File.readlink("/proc/self/fd/#{entry}")
    Integer(entry) unless target.end_with?("/fd") || RUBYS_OWN_FDS.include?(target)
  rescue SystemCallError
    nil
  end
  fds.sort.join(" ")
end

# Straight to fd, past Ruby's buffers.
def write_raw(fd, text)
  io = IO.for_fd(fd, autoclose: false)
  io.syswrite(text)
end

# Whether a standard handle works (its fd open).
def handle_state(io)
  io.stat
  "open"
rescue SystemCallError, IOError
  "closed"
end

def disposition(signal)
  old = trap(signal, "SYSTEM_DEFAULT")
  trap(signal, old)
  case old
  when "DEFAULT", "SYSTEM_DEFAULT", nil then "default"
  when "IGNORE", "" then "ignore"
  else "handled"
  end
end

# A line read from io byte by byte, without its newline.
def read_tty_line(io)
  line = +""
  # readpartial, not sysread: Ruby 2.7's sysread waits for the fd to be
  # readable (ppoll) before it reads, and a wait is no use of the terminal
  # that brings a pipeline's script forward (man 1, TERMINALS).
  while (byte = io.readpartial(1))
    break if byte == "\n"

    line << byte
  end
  line
rescue EOFError
  line
end

def ioctl_ints(request, count)
  buffer = ([0] * count).pack("S*")
  $stdin.ioctl(request, buffer)
  buffer.unpack("S*")
end

$winches = 0

def run_command(name, param, args)
  case name
  when "exit" then exit Integer(param)
  when "args" then args.each { |a| puts a.b.unpack1("H*") }
  when "env"
    value = ENV[param]
    puts value.nil? ? "unset" : value.b.unpack1("H*")
  when "envall" then ENV.to_h.map { |k, v| "#{k}=#{v}".b }.sort.each { |e| puts e.unpack1("H*") }
  when "cat"
    $stdout.flush
    $stdout.write($stdin.read)
    $stdout.flush
  when "out" then puts param
  when "err"
    $stdout.flush
    warn param
  when "kill"
    $stdout.flush
    default_signal(param) unless %w[KILL STOP].include?(param)
    Process.kill(param, Process.pid)
    loop { sleep 1 } # (until the signal ends it)
  when "sleep" then sleep Float(param)
  when "spawn"
    Process.spawn("sh", "-c", %(trap '' HUP; echo $$ > "$0.tmp" && mv "$0.tmp" "$0" && exec sleep 30), param)
    sleep 0.005 until File.exist?(param)
  when "daemon"
    Process.spawn("setsid", "sh", "-c", %(echo $$ > "$0.tmp" && mv "$0.tmp" "$0" && exec sleep 30), param,
                  in: File::NULL, out: File::NULL, err: File::NULL)
    # As a daemonising program does: return once it is detached.
    sleep 0.005 until File.exist?(param)
  when "pid"
    File.write("#{param}.tmp", Process.pid.to_s)
    File.rename("#{param}.tmp", param)
  when "server" then puts parent_of(Process.ppid)
  when "fds" then puts open_fds
  when "fdsto" then write_raw(Integer(param), "#{open_fds}\n")
  when "handlesto" then write_raw(Integer(param), "#{[$stdin, $stdout, $stderr].map { |io| handle_state(io) }.join(' ')}\n")
  when "ns"
    %w[mnt pid net user uts ipc cgroup].each do |kind|
      puts "#{kind} #{File.readlink("/proc/self/ns/#{kind}")}"
    rescue SystemCallError => e
      puts "#{kind} #{errno_name(e)}"
    end
  when "cgroup" then $stdout.write(File.read("/proc/self/cgroup"))
  when "sigs" then $stdout.write(File.readlines("/proc/self/status").grep(/\A(SigBlk|SigIgn):/).join)
  when "groups" then $stdout.write(File.readlines("/proc/self/status").grep(/\AGroups:/).first)
  when "initenv" then puts INIT_ENV.nil? ? "unset" : INIT_ENV.b.unpack1("H*")
  when "fdlink" then puts File.readlink("/proc/self/fd/#{param}")
  when "sigdisp" then puts disposition(param)
  when "onint"
    path = param
    trap("INT") do
      File.write(path, "")
      trap("INT", "SYSTEM_DEFAULT")
      Process.kill("INT", Process.pid)
    end
  when "intstay"
    path = param
    trap("INT") { File.write(path, "") }
  when "trap"
    $stdout.flush
    signal = param
    trap(signal) do
      puts "caught #{signal}"
      $stdout.flush
      exit 0
    end
  when "cwd" then puts Dir.pwd
  when "limits"
    limits = File.read("/proc/self/limits")
    stat = File.read("/proc/self/stat")
    oom = File.read("/proc/self/oom_score_adj")
    nice = stat[(stat.rindex(")") + 2)..].split(" ")[16]
    $stdout.write("#{limits}nice #{nice}\noom #{oom}")
  when "umask" then puts format("%04o", File.umask)
  when "time" then puts Process.clock_gettime(Process::CLOCK_REALTIME, :nanosecond)
  when "inittty" then puts INIT_TTY
  when "tty" then puts((0..2).map { |fd| terminal?(fd) ? "1" : "0" }.join(" "))
  when "devtty"
    begin
      File.open("/dev/tty", "r+").close
      puts "ok"
    rescue SystemCallError => e
      puts errno_name(e)
    end
  when "fg"
    begin
      pgrp = [0].pack("i")
      $stdin.ioctl(TIOCGPGRP, pgrp)
      puts pgrp.unpack1("i") == Process.getpgrp ? "fg" : "bg"
    rescue SystemCallError => e
      puts errno_name(e)
    end
  when "winsize"
    begin
      rows, cols = ioctl_ints(TIOCGWINSZ, 4)
      puts "#{rows} #{cols}"
    rescue SystemCallError => e
      puts errno_name(e)
    end
  when "winch" then trap("WINCH") { $winches += 1 }
  when "waitwinch" then sleep 0.01 while $winches.zero?
  when "ask"
    File.open("/dev/tty", "r+") do |tty|
      tty.syswrite("Say: ")
      puts "said #{read_tty_line(tty)}"
    end
  when "secret"
    $stdout.flush
    # io/console's noecho, the prompt inside it (IO#getpass writes its
    # prompt before it turns the echo off: a key typed at once is seen).
    console = IO.console
    line = console.noecho do
      console.write("Password: ")
      console.gets
    end
    console.write("\n")
    puts "length #{line.chomp.length}"
  when "pager"
    $stdout.flush
    text = (1..Integer(param)).map { |i| "line #{i}\n" }.join
    IO.popen(["less"], "w") { |less| less.write(text) }
    puts "less exited #{child_code($CHILD_STATUS)}"
  when "curses"
    $stdout.flush
    system(param, "-c", CURSES_PY)
    puts "curses exited #{child_code($CHILD_STATUS)}"
  when "die" then raise param
  when "_exit" then exit! Integer(param)
  else raise "agent: unknown command @#{name}"
  end
end

def main(args)
  args.each do |arg|
    next unless arg.start_with?("@")

    name, param = arg[1..].split(":", 2)
    run_command(name, param || "", args)
  end
end

main(ARGV)
