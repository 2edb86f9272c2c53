{fixtures}/format_v1.ptrace
SELECT func, file, count(*) AS samples FROM python.stacks WHERE depth = 0 GROUP BY func, file ORDER BY samples DESC, func
