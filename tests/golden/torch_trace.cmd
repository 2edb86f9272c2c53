{fixtures}/format_v1.ptrace
SELECT * FROM python.torch_trace ORDER BY time, seq
--format
csv
