# frozen_string_literal: true
require "json"
BEGIN { puts "begin block" }
END { puts "end block #{$!.inspect}" }
at_exit { puts "at_exit 1" }
at_exit { puts "at_exit 2 #{$!.class}" }
puts [$0, $PROGRAM_NAME, __FILE__, __dir__ == Dir.pwd, ARGV].to_json
puts "stdin: #{$stdin.read.inspect}"
puts "data: #{DATA.read.inspect} #{DATA.path}"
$stdout.flush
def deep(how)
  case how
  when "raise" then raise ArgumentError, "bad thing\nsecond line"
  when "exit" then exit 3
  when "exit_false" then exit false
  when "exit300" then exit 300
  when "systemexit" then raise SystemExit.new(5, "leaving")
  when "exit!" then exit! 4
  when "abort" then abort "aborted here"
  when "throw" then throw :nowhere
  when "int" then Process.kill(:INT, Process.pid); sleep 1
  when "term" then Process.kill(:TERM, Process.pid); sleep 1
  when "nomethod" then nil.frobnicate
  end
end
deep(ARGV.first)
puts "normal end"
__END__
the data
  section
