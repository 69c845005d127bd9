# frozen_string_literal: true

# The Ruby runner of `prefork-interp --run PROGRAM ARG...`, which runs
#
#     ruby [PROGRAM's #! options] -rprefork_interp/run PROGRAM ARG...
#
# In a server's setup run (PREFORK_INTERP set) it preloads what PROGRAM
# requires, becomes the server and returns in each call, where Ruby
# parses and runs PROGRAM; run directly, it does nothing. Run as a
# program, `ruby .../prefork_interp/run.rb [--preload LIB[,LIB...]]
# PROGRAM [ARG...]`, it runs that command (runner.rb).

if __FILE__ == $PROGRAM_NAME
  require_relative "runner"
  PreforkInterp::Runner.script_main(ARGV)
elsif ENV.key?("PREFORK_INTERP")
  require_relative "runner"
  PreforkInterp::Runner.serve($PROGRAM_NAME)
end
