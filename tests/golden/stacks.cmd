{fixtures}/format_v1.ptrace
SELECT ts, thread_id, thread_name, sample_id, depth, func, file, lineno, holds_gil, pid FROM python.stacks ORDER BY sample_id, depth
--format
csv
