{fixtures}/format_v1.ptrace
SELECT module, stage, count(*) AS calls, sum(duration) AS seconds FROM python.torch_trace WHERE time > now() - interval '100000 days' GROUP BY module, stage ORDER BY seconds DESC
