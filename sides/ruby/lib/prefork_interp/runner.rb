# frozen_string_literal: true

# The runner: an unchanged Ruby program behind prefork-interp.
#
#     prefork-interp --run PROGRAM ARG...
#     ruby [#! line's options] -rprefork_interp/run PROGRAM ARG...  (what it runs)
#     ruby .../prefork_interp/run.rb [--preload LIB[,LIB...]] PROGRAM [ARG...]
#
# Ruby opens PROGRAM, reads its #! line's options, loads the -r libraries
# and only then parses PROGRAM. So run.rb runs in the setup run (the
# server-to-be) with PROGRAM open but not yet parsed, as Perl's -M runner
# does: it preloads what PROGRAM requires (Scan, Preload), calls
# initialisation_complete and returns in each call's process, where Ruby
# goes on to parse and run PROGRAM as its main script. $0, __FILE__,
# __dir__, ARGV, DATA, BEGIN and END, at_exit and $!, exit statuses, the
# parser's warnings, an uncaught exception's message and backtrace are
# Ruby's own, as in a direct run: nothing of the runner is on the stack.
#
# The one thing a call must fix first: Ruby's handle on PROGRAM shares
# its file offset with the server and every other call (they are forks).
# Each call puts a private open of PROGRAM, at the offset Ruby had
# reached, on the same fd (Script). A PROGRAM that is no longer the file
# the setup run opened (changed without the reload check seeing it, its
# modification time set back, or between that check and the call; a
# relative name that names another file in this caller's directory) is
# run directly instead: exec of `ruby OPTIONS PROGRAM ARG...`.
#
# Preloading only saves time: a library that fails to load is logged
# (syslog, user facility) and left for PROGRAM to load, and fail, itself.
# What loading wrote to stdout and stderr (a library's warnings, what it
# prints as it loads) is kept, not shown, and written again in each call,
# as each direct run's loading writes it.
#
# Without PREFORK_INTERP (a direct run) run.rb does nothing, and Ruby runs
# PROGRAM itself.

module PreforkInterp
  # Runner.serve (in the setup run), Runner.script_main (run.rb run as a
  # program), the static scan (Runner::Scan) and the preloading
  # (Runner::Preload).
  module Runner
    USAGE = "usage: ruby .../prefork_interp/run.rb [--preload LIB[,LIB...]] PROGRAM [ARG...]\n"

    # What the load path is called.
    LOAD_PATH_NAMES = %w[$LOAD_PATH $: $-I].freeze

    # The static scan of a program's text: what it requires at top level,
    # in order, as steps (pure functions of the text and its file name):
    #
    #   [:require, FEATURE, LINE]     require "lit" (require_relative: the
    #                                 absolute path it names)
    #   [:gem, NAME, REQUIREMENT...]  gem "name", "req"
    #   [:load_path, OP, VALUES, UNLESS_INCLUDED]
    #                                 $LOAD_PATH.unshift/push/<< of values
    #                                 known statically, maybe guarded by
    #                                 `unless $LOAD_PATH.include?(VALUE)`
    #   [:binstub, GEM, EXECUTABLE]   load Gem.activate_bin_path("gem", "exe", ...)
    #
    # Requires are found in top-level statements and in the bodies of
    # top-level if, unless, elsif, else, begin, rescue, ensure and the
    # modifier forms (BEGIN blocks first, as Ruby runs them). A value is
    # known statically when it is a string literal, __FILE__, __dir__, a
    # top-level local assigned one unconditionally, or File.expand_path,
    # File.join, File.dirname or + of such values. The scan ends at the
    # first statement that touches the load path otherwise (what is
    # required after it may come from where it points), or changes it
    # only in some branch, or at a `gem` with arguments not known.
    module Scan
      module_function

      # The steps of the program in file `path`, read as Ruby would read
      # it, for a program whose __FILE__ is `file`; [] if unreadable or
      # not valid Ruby.
      def file_steps(path, file = path)
        source = File.binread(path)
      rescue SystemCallError, IOError
        []
      else
        steps(source.force_encoding(Encoding::UTF_8), file)
      end

      # The steps of a program's text (file: its __FILE__).
      def steps(source, file)
        require "ripper"
        tree = Ripper.sexp(source, file)
        return [] unless tree.is_a?(Array) && tree[0] == :program

        scanner = Scanner.new(file)
        scanner.program(tree[1])
        scanner.steps
      end

      # The value of a statically known expression (a Ripper tree), or nil
      # (locals: the top-level locals known, name => value).
      def value(node, file, locals = {})
        Scanner.new(file, locals).value(node)
      end

      # One walk of a program's statements.
      class Scanner
        attr_reader :steps

        # Each kind of statement's method; any other is a call, or no
        # step.
        STATEMENTS = {
          void_stmt: :nothing, "@comment": :nothing, if: :conditional, unless: :conditional,
          elsif: :conditional, else: :else_clause, if_mod: :modifier, unless_mod: :modifier,
          begin: :begin_block, rescue_mod: :rescue_modifier, assign: :assignment
        }.freeze

        # Each kind of expression's method, for its value; any other is a
        # call's.
        VALUES = {
          string_literal: :string_value, string_concat: :concatenation, var_ref: :variable,
          vcall: :vcall_value, paren: :paren_value, binary: :sum
        }.freeze

        # What each command (a call without receiver) becomes.
        COMMANDS = {
          "require" => :require_step, "require_relative" => :require_step, "gem" => :gem_step,
          "load" => :binstub_step
        }.freeze

        # The load path's methods that add to it, and where.
        LOAD_PATH_CHANGES = {
          "unshift" => :unshift, "prepend" => :unshift, "push" => :push, "append" => :push, "<<" => :push
        }.freeze

        # File's functions a value may be made with (and their arities).
        FILE_FUNCTIONS = {
          "expand_path" => 1..2, "join" => 1..64, "dirname" => 1..1, "absolute_path" => 1..2
        }.freeze

        def initialize(file, locals = {})
          @file = file
          @locals = locals.dup
          @steps = []
          @branches = 0 # how deep in bodies that may not run
        end

        # The program's statements: BEGIN blocks first, as Ruby runs them.
        def program(body)
          begins, rest = body.partition { |node| node.is_a?(Array) && node[0] == :BEGIN }
          begins.all? { |node| statements(node[1]) } && statements(rest)
        end

        # Each statement (false: the scan ends here).
        def statements(list)
          return true unless list.is_a?(Array)
          return statement(list) if list[0].is_a?(Symbol)

          list.all? { |node| statement(node) }
        end

        def statement(node)
          return true unless node.is_a?(Array) && node[0].is_a?(Symbol)

          forget_assigned(node) unless node[0] == :assign
          send(STATEMENTS.fetch(node[0], :call), node)
        end

        # The value of a statically known expression, or nil.
        def value(node)
          return nil unless node.is_a?(Array)

          send(VALUES.fetch(node[0], :call_value), node)
        end

        private

        def nothing(_node)
          true
        end

        # A body that may not run (what it assigns is not known after).
        def branch
          @branches += 1
          yield
        ensure
          @branches -= 1
        end

        # if, unless, elsif (with its else or elsif in rest).
        def conditional(node)
          _, condition, body, rest = node
          guard = rest.nil? ? guard(node[0], condition) : nil
          return guarded_body(body, guard) unless guard.nil?
          return false if mentions_load_path?(condition)

          branch { statements(body) } && (rest.nil? || branch { statement(rest) })
        end

        def else_clause(node)
          statements(node[1])
        end

        def modifier(node)
          _, condition, body = node
          guard = guard(node[0], condition)
          return guarded_body([body], guard) unless guard.nil?
          return false if mentions_load_path?(condition)

          branch { statement(body) }
        end

        def begin_block(node)
          node[1].is_a?(Array) && node[1][0] == :bodystmt ? bodystmt(node[1]) : statements(node[1])
        end

        def rescue_modifier(node)
          statement(node[1]) && branch { statement(node[2]) }
        end

        # VALUE of a condition `unless $LOAD_PATH.include?(VALUE)` (or
        # `if !...`), or nil.
        def guard(kind, condition)
          if %i[unless unless_mod].include?(kind)
            included_value(condition)
          elsif condition.is_a?(Array) && condition[0] == :unary && %i[! not].include?(condition[1])
            included_value(condition[2])
          end
        end

        # `unless $LOAD_PATH.include?(VALUE)`'s body: load path changes
        # that happen only if VALUE is not on the load path yet.
        def guarded_body(body, guard)
          body.all? do |node|
            next true if node.is_a?(Array) && node[0] == :void_stmt

            receiver, name, args = Calls.parts(node)
            !name.nil? && load_path?(receiver) && load_path_change(name, args, guard)
          end
        end

        def bodystmt(node)
          _, body, rescue_clause, else_clause, ensure_clause = node
          statements(body) && rescues(rescue_clause) &&
            (else_clause.nil? || branch { statements(else_clause[0] == :else ? else_clause[1] : else_clause) }) &&
            (ensure_clause.nil? || statements(ensure_clause[1]))
        end

        def rescues(node)
          return true if node.nil?

          branch { statements(node[3]) } && rescues(node[4])
        end

        # Locals assigned anywhere in node (but by a plain top-level
        # assignment) are not known any more.
        def forget_assigned(node)
          return unless node.is_a?(Array)

          if node[0] == :var_field && node[1].is_a?(Array) && node[1][0] == :@ident
            @locals.delete(node[1][1])
          else
            node.each { |child| forget_assigned(child) }
          end
        end

        def assignment(node)
          target = node[1]
          if target[0] == :var_field && target[1].is_a?(Array) && target[1][0] == :@ident
            known = @branches.zero? ? value(node[2]) : nil
            known.nil? ? @locals.delete(target[1][1]) : @locals[target[1][1]] = known
          end
          !mentions_load_path?(node)
        end

        def call(node)
          receiver, name, args = Calls.parts(node)
          result = if name.nil?
                     nil
                   elsif receiver.nil?
                     COMMANDS.key?(name) ? send(COMMANDS[name], name, args, node) : nil
                   elsif load_path?(receiver)
                     @branches.zero? && load_path_change(name, args, nil)
                   end
          result.nil? ? !mentions_load_path?(node) : result
        end

        # require "lit", require_relative "lit": true, or nil (not known).
        def require_step(name, args, node)
          feature = args&.size == 1 ? value(args[0]) : nil
          return nil if feature.nil?

          if name == "require_relative"
            base = dir
            return nil if base.nil?

            feature = File.expand_path(feature, base)
          end
          @steps << [:require, feature, line(node)]
          true
        end

        # gem "name", "requirement"...: true, or false (not known: what is
        # required after may be another version).
        def gem_step(_name, args, _node)
          values = args&.map { |arg| value(arg) }
          return false if values.nil? || values.empty? || values.include?(nil)

          @steps << [:gem, *values]
          true
        end

        # load Gem.activate_bin_path("gem", "exe", ...): true, or nil.
        def binstub_step(_name, args, _node)
          binstub = args&.size == 1 ? binstub(args[0]) : nil
          return nil if binstub.nil?

          @steps << [:binstub, *binstub] unless @steps.include?([:binstub, *binstub])
          true
        end

        # Gem.activate_bin_path("gem", "exe", ...) or Gem.bin_path(...):
        # [gem, exe], or nil.
        def binstub(node)
          receiver, name, args = Calls.parts(node)
          return nil unless constant?(receiver, "Gem") && %w[activate_bin_path bin_path].include?(name)
          return nil if args.nil? || args.size < 2

          names = args[0, 2].map { |arg| value(arg) }
          names.include?(nil) ? nil : names
        end

        # A change of the load path: a step, or false (not one we know).
        def load_path_change(name, args, guard)
          op = LOAD_PATH_CHANGES[name]
          values = op.nil? ? nil : args&.map { |arg| value(arg) }
          return false if values.nil? || values.empty? || values.include?(nil)

          @steps << [:load_path, op, values, guard]
          true
        end

        # VALUE of `$LOAD_PATH.include?(VALUE)`, or nil.
        def included_value(node)
          receiver, name, args = Calls.parts(node)
          return nil unless name == "include?" && load_path?(receiver) && args&.size == 1

          value(args[0])
        end

        def string_value(node)
          content = node[1]
          return nil unless content.is_a?(Array) && content[0] == :string_content

          parts = content[1..].map { |part| string_part(part) }
          parts.include?(nil) ? nil : parts.join
        end

        # A literal part (without escapes, whose text Ripper gives as
        # written) or an interpolation of a known value.
        def string_part(part)
          case part[0]
          when :@tstring_content then part[1].include?("\\") ? nil : part[1]
          when :string_embexpr then part[1].is_a?(Array) && part[1].size == 1 ? value(part[1][0]) : nil
          end
        end

        def concatenation(node)
          join_values([node[1], node[2]], &:join)
        end

        def sum(node)
          node[2] == :+ ? join_values([node[1], node[3]], &:join) : nil
        end

        def paren_value(node)
          node[1].is_a?(Array) && node[1].size == 1 ? value(node[1][0]) : nil
        end

        def variable(node)
          token = node[1]
          case token[0]
          when :@kw then token[1] == "__FILE__" ? @file : nil
          when :@ident then @locals[token[1]]
          end
        end

        def vcall_value(node)
          node[1][1] == "__dir__" ? dir : nil
        end

        # __dir__, or File.expand_path, File.join... of known values.
        def call_value(node)
          receiver, name, args = Calls.parts(node)
          return dir if receiver.nil? && name == "__dir__" && args == []
          return nil unless file_function?(receiver, name, args)

          join_values(args) { |values| File.public_send(name, *values) }
        end

        def file_function?(receiver, name, args)
          constant?(receiver, "File") && !args.nil? && FILE_FUNCTIONS.fetch(name, 0...0).cover?(args.size)
        end

        def join_values(nodes)
          values = nodes.map { |node| value(node) }
          values.include?(nil) ? nil : yield(values)
        end

        # __dir__: the directory of the file's real path.
        def dir
          File.dirname(File.realpath(@file))
        rescue SystemCallError
          nil
        end

        def constant?(node, name)
          node.is_a?(Array) && %i[var_ref top_const_ref].include?(node[0]) && node[1][0] == :@const &&
            node[1][1] == name
        end

        def load_path?(node)
          node.is_a?(Array) && node[0] == :var_ref && node[1][0] == :@gvar && LOAD_PATH_NAMES.include?(node[1][1])
        end

        def mentions_load_path?(node)
          return false unless node.is_a?(Array)
          return true if node[0] == :@gvar && LOAD_PATH_NAMES.include?(node[1])

          node.any? { |child| mentions_load_path?(child) }
        end

        # The line a statement starts on (its first token's).
        def line(node)
          return nil unless node.is_a?(Array)
          return node[2][0] if node[0].is_a?(Symbol) && node[0].to_s.start_with?("@")

          node.each do |child|
            found = line(child)
            return found unless found.nil?
          end
          nil
        end
      end

      # Method calls in Ripper's trees.
      module Calls
        # Each kind of call's parts: [receiver, name token, arguments].
        SHAPES = {
          command: ->(node) { [nil, node[1], node[2]] },
          command_call: ->(node) { [node[1], node[3], node[4]] },
          call: ->(node) { [node[1], node[3], []] },
          fcall: ->(node) { [nil, node[1], []] },
          vcall: ->(node) { [nil, node[1], []] }
        }.freeze

        module_function

        # [receiver (nil for none), name, argument nodes (nil: not plain
        # arguments, such as a splat or a block)] of a call, or nil.
        def parts(node)
          return nil unless node.is_a?(Array)
          return [node[1], "<<", [node[3]]] if node[0] == :binary && node[2] == :<<
          return with_arguments(node) if node[0] == :method_add_arg

          shape = SHAPES[node[0]]
          return nil if shape.nil?

          receiver, token, args = shape.call(node)
          [receiver, ident(token), arguments(args)]
        end

        # recv.name(args), name(args).
        def with_arguments(node)
          inner = parts(node[1])
          return nil if inner.nil?

          paren = node[2]
          args = paren.is_a?(Array) && paren[0] == :arg_paren ? paren[1] : paren
          [inner[0], inner[1], args.nil? || args.empty? ? [] : arguments(args)]
        end

        def ident(token)
          token.is_a?(Array) && %i[@ident @const].include?(token[0]) ? token[1] : nil
        end

        def arguments(node)
          return nil unless node.is_a?(Array)
          return arguments(node[1]) if node[0] == :args_add_block && node[2] == false
          return nil if node[0].is_a?(Symbol)

          node
        end
      end
    end

    # Loads what the program requires (its scan's steps, a binstub's gem
    # executable's too) and the libraries named, in the setup run. The
    # load path during each require is what the program's own changes
    # before it make it; afterwards those changes are taken out again
    # (the program makes them in each call), leaving only what loading
    # did to it, as a direct run's load path is at that point. Failures
    # are kept (failures), the followed gem executables too (followed).
    class Preload
      attr_reader :failures, :followed, :output

      def initialize(program, libraries)
        @program = program
        @libraries = libraries
        @failures = []
        @followed = []
        @output = [+"".b, +"".b]
      end

      # Everything; what loading wrote to fds 1 and 2 kept (output:
      # [stdout's bytes, stderr's]), not shown.
      def run
        preload_program
        @libraries.each { |library| load_library(library, nil, nil) }
        self
      end

      private

      def preload_program
        added = []
        apply(Scan.file_steps(@program), @program, added, 0)
      ensure
        added.reverse_each { |entry| Runner.take_out_of_load_path(entry) }
      end

      def apply(steps, file, added, depth)
        steps.each do |step|
          case step[0]
          when :require then load_library(step[1], file, step[2])
          when :gem then attempt("gem #{step[1]}") { gem(*step[1..]) }
          when :load_path then change_load_path(step, added)
          when :binstub then follow(step[1], step[2], added, depth)
          end
        end
      end

      # require, as from the program's line (a library's warning that
      # points at its requirer points there, as in a direct run).
      def load_library(feature, file, line)
        attempt(feature) do
          if file.nil?
            require feature
          else
            # TOPLEVEL_BINDING: a frame labelled <main>, as the program's.
            eval("require #{feature.dump}", TOPLEVEL_BINDING, file, line || 1) # rubocop:disable Security/Eval, Style/EvalWithLocation
          end
        end
      end

      def change_load_path(step, added)
        _, op, values, guard = step
        return if !guard.nil? && $LOAD_PATH.include?(guard)

        # New Strings, so that they are told from the others by identity.
        entries = values.map(&:dup)
        op == :unshift ? $LOAD_PATH.unshift(*entries) : $LOAD_PATH.push(*entries)
        added.concat(entries)
      end

      # A RubyGems binstub: its gem activated as the binstub activates it
      # (as a direct run does first), then its executable scanned and
      # preloaded in turn.
      def follow(name, executable, added, depth)
        return if depth.positive? || !defined?(Gem.activate_bin_path)
        # Gem.use_gemdeps (the binstub's first step) would pick the gems.
        return unless ENV.fetch("RUBYGEMS_GEMDEPS", "").empty?

        path = attempt("#{name}'s #{executable}") do
          Gem.activate_bin_path(name, executable, Runner.binstub_version(ARGV.first))
        end
        return if path.nil? || @followed.include?(path)

        @followed << path
        apply(Scan.file_steps(path), path, added, depth + 1)
      end

      # The block's value, or nil after noting its failure. What it
      # wrote is kept if it did not fail (the program loads again what
      # failed, and writes again).
      def attempt(what)
        error = nil
        value = nil
        written = Runner.capturing_output do
          value = yield
        rescue ScriptError, StandardError, SystemExit => e
          error = e
        end
        return value.tap { @output.zip(written).each { |kept, more| kept << more } } if error.nil?

        @failures << "preloading #{what} failed: #{error.class}: #{error.message}"
        nil
      end
    end

    # Ruby's handle on the program (the main script it will parse once
    # run.rb is loaded): its fd, the offset reached, the file's identity.
    class Script
      attr_reader :program, :fileno, :offset, :stat

      def initialize(program, fileno, offset, stat)
        @program = program
        @fileno = fileno
        @offset = offset
        @stat = stat
      end

      # Found by the file it is open on (the lowest read-only fd on it),
      # or nil.
      def self.find(program)
        want = File.stat(program)
        fds = Dir.children("/proc/self/fd").map { |name| Integer(name, exception: false) }.compact.sort
        fds.each do |fileno|
          next if fileno < 3

          found = open_on(fileno, want)
          return new(program, fileno, found, want) unless found.nil?
        end
        nil
      rescue SystemCallError
        nil
      end

      # fileno's offset if it is open read-only on the file `want`, else
      # nil.
      def self.open_on(fileno, want)
        stat = File.stat("/proc/self/fd/#{fileno}")
        return nil unless stat.dev == want.dev && stat.ino == want.ino

        info = File.read("/proc/self/fdinfo/#{fileno}")
        offset = info[/^pos:\s+(\d+)/, 1]
        flags = info[/^flags:\s+([0-7]+)/, 1]
        offset.nil? || flags.nil? || (flags.to_i(8) & 3).nonzero? ? nil : Integer(offset)
      rescue SystemCallError
        nil
      end

      # In a call: a private open of the program, at the offset, in the
      # fd's place (close-on-exec, as Ruby had it), if the program is
      # still the file opened; true if done.
      def take_private
        File.open(@program, File::RDONLY) do |file|
          return false unless same_file?(file.stat)

          file.sysseek(@offset)
          IO.for_fd(@fileno, autoclose: false).reopen(file)
        end
        true
      rescue SystemCallError, IOError
        false
      end

      def same_file?(stat)
        [stat.dev, stat.ino, stat.size, stat.mtime] == [@stat.dev, @stat.ino, @stat.size, @stat.mtime]
      end
    end

    module_function

    # run.rb in a setup run (PREFORK_INTERP set): preloads, becomes the
    # server, and returns in each call, where Ruby runs the program.
    def serve(program)
      # First: what preloading reads of ENV is tracked from here.
      require_relative "../prefork_interp"

      if ["-e", "-"].include?(program) || !File.file?(program)
        abort("prefork_interp/run: needs a program file " \
              "(ruby -rprefork_interp/run PROGRAM ARG...), not #{program}")
      end
      script = Script.find(program)
      command = setup_command(program)
      preload = Preload.new(program, preload_list).run
      failures = preload.failures
      failures += ["Ruby's handle on #{program} not found: each call runs it directly"] if script.nil?
      log_failures(program, failures)
      PreforkInterp.autoreload_also_check(File.expand_path(program), *preload.followed)
      PreforkInterp.initialisation_complete
      # A call: ARGV, ENV, the std streams, the directory are the caller's.
      run_directly(command, program, ARGV) unless script&.take_private
      take_switches(command) unless command.switched.nil?
      replay_output(preload.output)
    end

    # run.rb run as a program: its options, then the program run as
    # `ruby -rprefork_interp/run PROGRAM ARG...` (with PREFORK_INTERP set)
    # or `ruby PROGRAM ARG...`, this Ruby's options kept.
    def script_main(argv)
      libraries, program, args = parse(argv)
      exe, argv0, options = ruby_command(argv.size)
      env = {}
      if ENV.key?("PREFORK_INTERP")
        options += ["-r#{File.expand_path('run.rb', __dir__)}"]
        listed = [ENV.fetch("PREFORK_INTERP_PRELOAD", nil), *libraries].compact.reject(&:empty?)
        env["PREFORK_INTERP_PRELOAD"] = listed.join(",") unless libraries.empty?
      end
      exec(env, [exe, argv0], *options, program, *args)
    rescue SystemCallError => e
      abort("prefork_interp/run: cannot run #{exe}: #{e.message}")
    end

    # (libraries, program, args) from run.rb's command line; exits 2 with
    # the usage for a bad one.
    def parse(args)
      libraries = []
      args = args.dup
      while (option = args.first) && option.start_with?("-") && option != "-"
        args.shift
        break if option == "--"

        libraries.concat(preload_option(option, args).split(",").reject(&:empty?))
      end
      usage("no program given") if args.empty?
      [libraries, args[0], args[1..]]
    end

    # --preload's value (taken from args after `--preload`).
    def preload_option(option, args)
      return option.delete_prefix("--preload=") if option.start_with?("--preload=")

      usage("unknown option #{option}") unless option == "--preload"
      usage("--preload needs a library name") if args.empty?
      args.shift
    end

    def usage(message)
      $stderr.write("prefork_interp: #{message}\n#{USAGE}")
      exit(2)
    end

    # PREFORK_INTERP_PRELOAD: LIB[,LIB...] to preload beyond what the
    # program requires, read untracked (it says what to preload, not what
    # the program does: callers differing in it share a server).
    def preload_list
      InitEnv.untracked("PREFORK_INTERP_PRELOAD").to_s.split(",").reject(&:empty?)
    end

    # [interpreter, its argv[0], its options]: this Ruby's command line
    # without the main script and its arguments (args of them), and
    # without the runner's -r and what follows it (the interpreter's own
    # options, from PROGRAM's #! line, come before it; after it, what the
    # client adds for a server only).
    def ruby_command(args)
      words = File.binread("/proc/self/cmdline").split("\0", -1)
      words.pop if words.last == ""
      options = words[1...(words.size - args - 1)] || []
      [File.readlink("/proc/self/exe"), words[0] || "ruby", without_runner(options)]
    rescue SystemCallError
      ["ruby", "ruby", []]
    end

    def without_runner(options)
      runner = options.index { |option| runner_option?(option) }
      runner.nil? ? options : options[0...runner]
    end

    # The setup run's command line: the interpreter, its argv[0], its own
    # options (those before the runner's -r: the #! line's; after it come
    # what the client adds for a server only), and the globals Ruby's -s
    # made of the first caller's leading "-name" arguments (switched; nil
    # without -s), which Ruby took off ARGV before the runner ran.
    Command = Struct.new(:exe, :argv0, :options, :switched)

    def setup_command(program)
      words = File.binread("/proc/self/cmdline").split("\0", -1)
      words.pop if words.last == ""
      runner = words.index { |word| runner_option?(word) }
      return Command.new(*ruby_command(ARGV.size), nil) if runner.nil?

      options = words[1...runner]
      switched = sflag?(options) ? switched(words, runner, program) : nil
      Command.new(File.readlink("/proc/self/exe"), words[0], options, switched)
    rescue SystemCallError
      Command.new(*ruby_command(ARGV.size), nil)
    end

    # The globals -s made of the setup run's arguments (words: its
    # command line, with PROGRAM after the runner's -r).
    def switched(words, runner, program)
      at = (runner + 1...words.size).find { |index| words[index] == program }
      raw = at.nil? ? ARGV : words[(at + 1)..]
      switches(raw.first(raw.size - ARGV.size))[0].map(&:first)
    rescue InvalidSwitch
      []
    end

    def runner_option?(word)
      word.match?(%r{\A-r(?:.*/)?prefork_interp/run(?:\.rb)?\z})
    end

    # A -s switch whose name no global can have.
    class InvalidSwitch < StandardError; end

    # Ruby's single-letter switches that take no argument (-s among them),
    # which one word may combine (-ws); any other letter takes the rest
    # of the word.
    FLAGS = "acdhlnpsSvwyU"

    # Whether Ruby's options include -s.
    def sflag?(options)
      options.any? do |option|
        next false unless option.match?(/\A-[^-]/)

        letters = option[1..].chars
        flags = letters.take_while { |letter| FLAGS.include?(letter) }
        flags.include?("s")
      end
    end

    # What Ruby's -s makes of args (ruby.c's process_sflag): each leading
    # "-name" or "-name=value" a global ($name, "-" as "_"; true, or the
    # value as a binary String), up to "--" or the first other argument:
    # [[[global, value]...], how many arguments it takes]. An invalid
    # name raises InvalidSwitch with Ruby's message (its NameError's).
    def switches(args)
      found = []
      count = 0
      args.each do |arg|
        break unless arg.start_with?("-")

        count += 1
        break if arg == "--"

        name, value = arg[1..].split("=", 2)
        unless name.match?(/\A[A-Za-z0-9_-]*\z/)
          raise InvalidSwitch, "invalid name for global variable - #{value.nil? ? arg : "-#{name}"}"
        end

        found << ["$#{name.tr('-', '_')}", value.nil? ? true : value.b]
      end
      [found, count]
    end

    # In a call, under -s: the globals the first caller's switches made
    # are nil again, and this caller's are made (and taken off ARGV), as
    # Ruby's start-up does; an invalid name ends the call as it ends a
    # direct run.
    def take_switches(command)
      command.switched.each { |name| set_global(name, nil) }
      found, count = switches(ARGV)
      ARGV.shift(count)
      found.each { |name, value| set_global(name, value) }
    rescue InvalidSwitch => e
      $stderr.write("#{command.argv0}: #{e.message} (NameError)\n")
      exit!(1)
    end

    def set_global(name, value)
      return unless name.match?(/\A\$[A-Za-z_]\w*\z/)

      TOPLEVEL_BINDING.eval("->(value) { #{name} = value } # ->(value) { $x = value }").call(value)
    end

    # A direct run in this process: `ruby OPTIONS PROGRAM ARG...`.
    def run_directly(command, program, args)
      exe, argv0, options = command.to_a
      exec([exe, argv0], *options, program, *args)
    rescue SystemCallError => e
      warn("prefork_interp/run: cannot run #{exe}: #{e.message}")
      exit!(127)
    end

    # The version a RubyGems binstub asks for: "_VERSION_" as its first
    # argument, or any.
    def binstub_version(first)
      wanted = first&.b&.[](/\A_(.*)_\z/, 1)
      !wanted.nil? && Gem::Version.correct?(wanted) ? wanted : ">= 0.a"
    end

    # Takes entry (a String the preloading put on $LOAD_PATH) out again:
    # that object, or (if loading replaced it by an equal one) the first
    # equal entry.
    def take_out_of_load_path(entry)
      index = $LOAD_PATH.index { |path| path.equal?(entry) } || $LOAD_PATH.index(entry)
      $LOAD_PATH.delete_at(index) unless index.nil?
    end

    # What the block writes to fds 1 and 2 (Ruby's std streams flushed
    # before and after): [stdout's bytes, stderr's], each into a memory
    # file in its place meanwhile; written through if there is none to
    # be had (or fd 1 or 2 is closed).
    def capturing_output(&block)
      require_relative "sys"
      flush_std_streams
      files = []
      saved = []
      begin
        2.times { files << memory_file }
        [1, 2].each { |fileno| saved << IO.for_fd(fileno, autoclose: false).dup }
      rescue SystemCallError, IOError, Fiddle::DLError
        (files + saved).each(&:close)
        yield
        return ["".b, "".b]
      end
      redirected(files, saved, &block)
      files.map do |file|
        file.rewind
        file.read.tap { file.close }
      end
    end

    # The block run with fds 1 and 2 on files, then on saved (closed
    # after).
    def redirected(files, saved)
      files.each_with_index { |file, index| Sys.dup2(file.fileno, index + 1) }
      yield
    ensure
      flush_std_streams
      saved.each_with_index do |copy, index|
        Sys.dup2(copy.fileno, index + 1)
        copy.close
      end
    end

    # An anonymous file in memory, binary (memfd_create).
    def memory_file
      @memfd_create ||= Fiddle::Function.new(Fiddle::Handle::DEFAULT["memfd_create"],
                                             [Fiddle::TYPE_VOIDP, Fiddle::TYPE_INT], Fiddle::TYPE_INT)
      fileno = @memfd_create.call("prefork-interp preload", 1) # MFD_CLOEXEC
      raise SystemCallError.new("memfd_create", Fiddle.last_error) if fileno.negative?

      IO.for_fd(fileno, "r+b")
    end

    def flush_std_streams
      [$stdout, $stderr, STDOUT, STDERR].uniq(&:__id__).each do |stream| # rubocop:disable Style/GlobalStdStream
        stream.flush unless stream.closed?
      rescue IOError, SystemCallError
        nil
      end
    end

    # In a call: what preloading wrote, written again (where it cannot
    # be, the program's own writes fail as they would).
    def replay_output(output)
      [[$stdout, output[0]], [$stderr, output[1]]].each do |stream, bytes|
        stream.write(bytes) unless bytes.empty?
      rescue SystemCallError, IOError
        nil
      end
    end

    # Syslog, as the server logs (ident "prefork-interp PROGRAM").
    def log_failures(program, failures)
      return if failures.empty?

      require_relative "log"
      log = Log::Log.new(program, Log.facility("user"))
      failures.each { |message| log.call(Log::LOG_INFO, message) }
      log.close
    rescue StandardError
      nil
    end
  end
end
