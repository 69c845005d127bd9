# frozen_string_literal: true

# The environment from the interpreter's start to
# initialisation_complete: the exec-time environment (read as the
# tracking starts, before the script could overwrite that memory), what
# initialisation read of it (the greeting's `env` line: a caller whose
# values differ gets a server of its own, initialised with its values;
# man/prefork-interp.7), and what it changed (laid over each call's
# environment).
#
# From the tracking's start until initialisation_complete, ENV records
# the name of each variable read: a module prepended to its singleton
# class (TrackedEnv) notes the names, then lets ENV's own method do the
# rest. The tracking starts as this file loads in a server's setup run
# (PREFORK_INTERP set): the client loads it first of all, with
# `ruby -rprefork_interp/init_env SCRIPT`, as Python's
# prefork_interp_early.pth imports the package, so that what the
# script's first lines read is seen too; else when prefork_interp loads
# (InitEnv.start, which starts it once). Requires nothing but wire.rb,
# and that only when asked for a digest: a direct run needs none of it.
#
# Also here, because it must be in place from the interpreter's start:
# the at_exit handler that Ruby runs after every other (at_last_exit,
# for fast_exit).

# Loaded twice (Ruby before 3.1 may, by two paths to it: -r through
# $LOAD_PATH, then require_relative through a symlink): the first load
# stands, with its tracking.
return if defined?(PreforkInterp::InitEnv::InitEnv)

module PreforkInterp
  # InitEnv.start (the process's one InitEnv::InitEnv), InitEnv.world,
  # InitEnv.apply, InitEnv.at_last_exit, INTERPRETER_VARIABLES.
  module InitEnv
    # Wire::ENV_VAR (not required: a direct run needs none of it).
    ENV_VAR = "PREFORK_INTERP".b.freeze

    # What the interpreter reads of its environment as it starts, before
    # any of the script's code (its options and load path, its heap's
    # and stacks' sizes, the JIT and thread switches, the locale it
    # takes its default encoding from; RubyGems, which it loads before
    # any -r library: its gem paths, and Debian's switches of it): inputs
    # of the initialisation as surely as a variable the script reads, so
    # every server's greeting names them (its `start` line), and a
    # caller whose values differ gets a server started with its own. The
    # one list of this side, each variable of ruby(1)'s ENVIRONMENT, GC
    # ENVIRONMENT and STACK SIZE ENVIRONMENT being in it or named here
    # with the reason it is not: RUBYPATH and PATH (a script is found
    # through them with -S only, and a client's run names the script's
    # path), RUBYSHELL (Windows and OS/2 only). (The greeting's `env`
    # line, apart from `start`: --list shows what the script's
    # initialisation read, not these.)
    INTERPRETER_VARIABLES = %w[
      RUBYOPT RUBYLIB
      RUBY_GC_HEAP_INIT_SLOTS RUBY_GC_HEAP_FREE_SLOTS RUBY_GC_HEAP_GROWTH_FACTOR
      RUBY_GC_HEAP_GROWTH_MAX_SLOTS RUBY_GC_HEAP_FREE_SLOTS_MIN_RATIO
      RUBY_GC_HEAP_FREE_SLOTS_GOAL_RATIO RUBY_GC_HEAP_FREE_SLOTS_MAX_RATIO
      RUBY_GC_HEAP_OLDOBJECT_LIMIT_FACTOR RUBY_GC_MALLOC_LIMIT RUBY_GC_MALLOC_LIMIT_MAX
      RUBY_GC_MALLOC_LIMIT_GROWTH_FACTOR RUBY_GC_OLDMALLOC_LIMIT RUBY_GC_OLDMALLOC_LIMIT_MAX
      RUBY_GC_OLDMALLOC_LIMIT_GROWTH_FACTOR
      RUBY_THREAD_VM_STACK_SIZE RUBY_THREAD_MACHINE_STACK_SIZE
      RUBY_FIBER_VM_STACK_SIZE RUBY_FIBER_MACHINE_STACK_SIZE
      RUBY_SHARED_FIBER_POOL_FREE_STACKS RUBY_IO_BUFFER_DEFAULT_SIZE RUBY_YJIT_ENABLE
      RUBY_GC_HEAP_0_INIT_SLOTS RUBY_GC_HEAP_1_INIT_SLOTS RUBY_GC_HEAP_2_INIT_SLOTS
      RUBY_GC_HEAP_3_INIT_SLOTS RUBY_GC_HEAP_4_INIT_SLOTS
      RUBY_GC_HEAP_REMEMBERED_WB_UNPROTECTED_OBJECTS_LIMIT_RATIO
      RUBY_MN_THREADS RUBY_MAX_CPU RUBY_FREE_AT_EXIT RUBY_CRASH_REPORT
      GEM_HOME GEM_PATH GEM_SPEC_CACHE GEM_SKIP GEM_VENDOR
      GEM_REQUIREMENT_DID_YOU_MEAN GEM_REQUIREMENT_ERROR_HIGHLIGHT
      GEM_REQUIREMENT_SYNTAX_SUGGEST
      DEBIAN_RUBY_STANDALONE DEBIAN_DISABLE_RUBYGEMS_INTEGRATION
      LC_ALL LC_CTYPE LANG
    ].map { |name| name.b.freeze }.freeze
    # (The GC's and stacks' variables of 2.7 to 3.3, the numbered heaps'
    # of 3.3, the M:N threads' and RUBY_FREE_AT_EXIT of 3.3,
    # RUBY_CRASH_REPORT of 3.4. RubyGems reads its GEM_* as it loads the
    # default gems Ruby starts with. Not HOME nor XDG_DATA_HOME, where it
    # finds the user's gem directory: that follows the user, whose
    # servers are their own (the run directory is the user's), as
    # Python's side leaves out the HOME of its user site. Ruby sets LC_CTYPE from the
    # locale variables at start, and its default external encoding from
    # that.)

    # ENV's own [] (taken before TrackedEnv is prepended): a read that
    # records nothing.
    UNTRACKED_AREF = ENV.method(:[])
    private_constant :UNTRACKED_AREF

    # The tracker once started (start), the blocks the last at_exit
    # handler runs (at_last_exit), and why that handler may not be the
    # last of all (nil: it is).
    @started = nil
    @last_exit_blocks = []
    @last_exit_unsure = nil

    class << self
      # The process's tracker, started once: by this file as it loads in
      # a server's setup run, else by prefork_interp. A later call finds
      # it running and returns it (the reads so far kept). Also registers
      # the at_exit handler at_last_exit runs blocks in.
      def start
        return @started unless @started.nil?

        # Ruby runs at_exit handlers last registered first: this one runs
        # after all those registered after it. Before any of the script's
        # code (no frame of the main script calls us: the client's -r) that
        # is every handler but the interpreter's own; else a handler the
        # script registered before loading us would run after it.
        if caller_locations.any? { |location| location.label == "<main>" }
          @last_exit_unsure = "prefork_interp was loaded by the script, not before it " \
                              "(ruby -rprefork_interp/init_env, as this project's client starts a " \
                              "server): an at_exit handler registered before that would run after its own"
        end
        at_exit { PreforkInterp::InitEnv.run_last_exit_blocks }
        @started = InitEnv.new
        ENV.singleton_class.prepend(TrackedEnv) unless ENV.singleton_class.include?(TrackedEnv)
        @started
      end

      # The tracker, or nil before start.
      attr_reader :started

      # A name read (TrackedEnv's note), while the tracker tracks.
      def note_read(name)
        tracker = @started
        tracker.note_read(name) if !tracker.nil? && tracker.tracking
      end

      # A variable's value, read without noting it (for the runner's own
      # settings, which pick what to preload, not what the program does).
      def untracked(name)
        UNTRACKED_AREF.call(name)
      end

      # Runs the block at the very end of a run: in the at_exit handler
      # start registered, after every other at_exit handler (those the
      # script registers, from its first line on, run first), with $!
      # what Ruby takes the exit status from. Returns nil; or, when that
      # handler may not be the last (the tracking started late, or never),
      # why, and the block is not kept.
      def at_last_exit(&block)
        return "prefork_interp's tracking never started" if @started.nil?
        return @last_exit_unsure unless @last_exit_unsure.nil?

        @last_exit_blocks << block
        nil
      end

      # The last at_exit handler's body: the blocks at_last_exit kept, in
      # that order.
      def run_last_exit_blocks
        @last_exit_blocks.each(&:call)
      end
    end

    # What the interpreter's start left and initialisation did: made once,
    # by InitEnv.start, which starts the tracking. Also the files
    # autoreload_also_check named (also_check).
    class InitEnv
      # initial: /proc/self/environ as it was (binary), or the
      # SystemCallError that reading it raised. tracking: whether reads
      # are noted yet.
      attr_reader :initial, :tracking, :also_check

      def initialize
        @initial = InitEnv.read_initial_environ
        @reads = {} # names read (binary Strings), as a set
        @tracking = true
        @also_check = []
      end

      # The environment as exec left it: the kernel's copy, which ENV
      # changes never touch (until Ruby moves the environment to write a
      # long $0 over it: hence read first of all), or the SystemCallError
      # if unreadable.
      def self.read_initial_environ
        File.binread("/proc/self/environ")
      rescue SystemCallError => e
        e
      end

      def note_read(name)
        name = String.try_convert(name)
        @reads[name.b.freeze] = true unless name.nil?
      rescue StandardError
        nil # not a name: ENV's lookup says why
      end

      # Initialisation is over: nothing is noted from now on (TrackedEnv
      # stays in ENV, which a prepended module cannot leave, recording
      # nothing). Returns the names read.
      def stop_tracking
        @tracking = false
        @reads.keys
      end

      # The exec-time environment, name => value (binary Strings).
      def exec_environ
        if @initial.is_a?(SystemCallError)
          raise SystemCallError.new("prefork-interp: cannot read /proc/self/environ (#{@initial.message})",
                                    @initial.errno)
        end

        before = {}
        @initial.split("\0").each do |entry|
          eq = entry.index("=", 1)
          # As getenv: the first of two entries with one name counts.
          before[entry[0, eq]] = entry[(eq + 1)..] if !eq.nil? && !before.key?(entry[0, eq])
        end
        before
      end

      # What the script's start-up did to its environment: ENV against
      # the exec-time environment, [name, value] set or changed, [name,
      # nil] removed. PREFORK_INTERP, ours, is left out, and so is a name
      # no variable can have (empty, or holding '='), which only a
      # hand-made environment has and no call could be given.
      def delta
        before = exec_environ
        current = {}
        ENV.each_pair { |name, value| current[name.b] = value.b }
        changes = current.reject { |name, value| before[name] == value }.to_a
        changes.concat(before.keys.reject { |name| current.key?(name) }.map { |name| [name, nil] })
        changes.select { |name, _| InitEnv.settable_name?(name) }
      end

      # The greeting's env dependency on the names read: [digest, names]
      # of their exec-time values, or nil.
      def dependency(reads)
        require_relative "wire"

        return nil unless reads.any? { |name| Wire.trackable_env_name(name) }

        Wire.env_dependency(reads, exec_environ)
      end

      # The greeting's start line: the interpreter's start-up variables
      # (INTERPRETER_VARIABLES) with their exec-time values, [digest,
      # names].
      def start_dependency
        require_relative "wire"

        Wire.env_dependency(INTERPRETER_VARIABLES, exec_environ)
      end

      def self.settable_name?(name)
        !name.empty? && name != ENV_VAR && !name.include?("=") && !name.include?("\0")
      end
    end

    # Prepended to ENV's singleton class by InitEnv.start: each method
    # that looks a variable up by name notes the name, then ENV's own
    # does the rest (its writes reach C's environ, which child processes
    # get, as always): [], fetch, key? and its aliases, values_at,
    # slice, assoc, delete (a read too: it returns the value, as
    # Python's pop); update and merge! with a block (which sees the old
    # value of each name given). to_hash, the implicit conversion (`**ENV`,
    # Hash[ENV], hash.merge(ENV)), reads every variable, and records them
    # all (Python's dict(os.environ) and {**os.environ}). Iteration and
    # what is made of it (each, keys, values, to_a, select, reject, find,
    # inspect...), and to_h, the copy (Ruby's name for one: ENV.dup
    # refuses and points to it), read no one variable and are not
    # recorded, as Python's iteration, items(), values() and copy() are
    # not: to read a variable without making it part of the server's
    # choice, read it from a copy (ENV.to_h["NAME"]). Once
    # initialisation is over it records nothing.
    module TrackedEnv
      def [](name)
        PreforkInterp::InitEnv.note_read(name)
        super
      end

      def fetch(name, *default, &block)
        PreforkInterp::InitEnv.note_read(name)
        super
      end

      %i[key? has_key? include? member?].each do |method|
        define_method(method) do |name|
          PreforkInterp::InitEnv.note_read(name)
          super(name)
        end
      end

      def values_at(*names)
        names.each { |name| PreforkInterp::InitEnv.note_read(name) }
        super
      end

      def slice(*names)
        names.each { |name| PreforkInterp::InitEnv.note_read(name) }
        super
      end

      def assoc(name)
        PreforkInterp::InitEnv.note_read(name)
        super
      end

      # Ruby's one way to unset a variable: no read of its value (as
      # Python's `del os.environ[name]` is none), unless a block is given,
      # which is told that the variable was not there.
      def delete(name, &block)
        PreforkInterp::InitEnv.note_read(name) if block
        super
      end

      def to_hash
        hash = super
        hash.each_key { |name| PreforkInterp::InitEnv.note_read(name) }
        hash
      end

      %i[update merge!].each do |method|
        define_method(method) do |*hashes, &block|
          unless block.nil?
            hashes.each do |hash|
              hash = Hash.try_convert(hash)
              hash&.each_key { |name| PreforkInterp::InitEnv.note_read(name) }
            end
          end
          super(*hashes, &block)
        end
      end
    end

    class << self
      # The hex digest of this process's world (its namespaces' inodes
      # and its cgroups): a client in another world goes to a server of
      # its own, as an executor of ours could not take on the caller's
      # namespaces and cgroups.
      def world
        require_relative "wire"

        inodes = Wire::WORLD_NAMESPACES.map do |name|
          link = File.readlink("/proc/self/ns/#{name}") # NAME:[INODE]
          digits = link[/\A[^\[]*\[(\d+)\]\z/, 1]
          digits.nil? ? nil : Integer(digits, 10)
        rescue SystemCallError
          nil
        end
        cgroups = begin
          File.binread("/proc/self/cgroup")
        rescue SystemCallError
          "".b
        end
        Wire.world_digest(inodes, cgroups)
      end

      # Lays initialisation's changes over a call's environment (ENV).
      def apply(changes, environ)
        changes.each do |name, value|
          if value.nil?
            environ.delete(name)
          else
            environ[name] = value
          end
        end
      end
    end
  end
end

# A server's setup run: the client loads this file first of all (ruby
# -rprefork_interp/init_env SCRIPT), and the tracking starts now, before
# the script's first line. (ENV.key? before TrackedEnv: not recorded.)
PreforkInterp::InitEnv.start if ENV.key?(PreforkInterp::InitEnv::ENV_VAR)
