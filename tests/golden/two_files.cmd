{fixtures}/format_v1.ptrace
{fixtures}/format_v1.ptrace
SELECT pid, count(*) AS frames FROM python.stacks GROUP BY pid
