"""The `probing` command: usage, help, and the table catalogue in every output format."""
import csv
import io
import json


def test_tables_lists_every_table_with_the_seed_columns(run, probing_bin):
    r = run(probing_bin, "--format", "json", "tables")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    tables = {row["table"] for row in rows}
    assert {"python.stacks", "python.torch_trace", "python.variables", "python.memory",
            "python.backtrace", "information_schema.df_settings", "system.process"} <= tables
    torch_cols = [row["column"] for row in rows if row["table"] == "python.torch_trace"]
    assert torch_cols[:8] == ["step", "seq", "module", "stage", "allocated", "max_allocated",
                              "cached", "duration"]


def test_every_output_format(run, probing_bin):
    table = run(probing_bin, "tables").stdout
    assert table.splitlines()[0].split() == ["table", "column", "type", "source", "description"]
    assert table.rstrip().endswith("rows)")
    parsed = list(csv.DictReader(io.StringIO(run(probing_bin, "--format", "csv", "tables").stdout)))
    lines = run(probing_bin, "--format", "jsonl", "tables").stdout.splitlines()
    assert len(parsed) == len(lines) > 20
    assert json.loads(lines[0])["table"] == parsed[0]["table"]


def test_usage_errors_exit_2(run, probing_bin):
    assert run(probing_bin).returncode == 2
    assert run(probing_bin, "no-such-command").returncode == 2
    assert run(probing_bin, "--format", "xml", "tables").returncode == 2
    h = run(probing_bin, "--help")
    assert h.returncode == 0 and "tables" in h.stdout
    assert run(probing_bin, "tables", "--help").returncode == 0
    v = run(probing_bin, "--version")
    assert v.returncode == 0 and "trace format v1" in v.stdout
