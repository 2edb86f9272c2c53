{fixtures}/format_v1.ptrace
SELECT * FROM python.nope
