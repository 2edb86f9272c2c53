{fixtures}/format_v1.ptrace
--folded
-
