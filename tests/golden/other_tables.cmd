{fixtures}/format_v1.ptrace
SELECT 'memory' AS t, json_object('rss', rss, 'py_blocks', py_blocks, 'cuda_allocated', cuda_allocated, 'cuda_reserved', cuda_reserved) AS row FROM python.memory UNION ALL SELECT 'variables', json_object('step', step, 'func', func, 'name', name, 'value', value) FROM python.variables UNION ALL SELECT 'metrics', json_object('name', name, 'value', value) FROM python.metrics UNION ALL SELECT 'process', json_object('pid', pid, 'cmdline', cmdline, 'rank', rank) FROM system.process
--format
jsonl
