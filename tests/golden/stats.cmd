{fixtures}/format_v1.ptrace
--stats
--table
system.process
