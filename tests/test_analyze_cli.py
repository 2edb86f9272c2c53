"""probing-analyze against real recordings: the v1 fixture, damaged copies of it, and bad input."""
import json
import shutil

from conftest import FIXTURES

FIXTURE = FIXTURES / "format_v1.ptrace"


def test_summary_of_the_fixture(run, analyze_bin):
    r = run(analyze_bin, FIXTURE)
    assert r.returncode == 0, r.stderr
    assert "Recording: 3 segments" in r.stdout
    assert "pid 4242: python train.py --lr 0.1 (Python 3.11.2, host node7, rank 3)" in r.stdout
    assert "stack samples: 9" in r.stdout
    assert "4250 loader-0" in r.stdout
    assert "forward (model.py)" in r.stdout
    assert r.stderr == ""


def test_stats_shows_the_index_was_used(run, analyze_bin):
    r = run(analyze_bin, FIXTURE, "--stats")
    assert r.returncode == 0, r.stderr
    row = [l for l in r.stdout.splitlines() if l.startswith(str(FIXTURE))][0].split()
    assert row[1:8] == ["ptrace", "3", "0", "0", "0", "yes", "no"]


def test_truncated_recording_loads_its_whole_segments(run, analyze_bin, tmp_path):
    data = FIXTURE.read_bytes()
    cut = tmp_path / "cut.ptrace"
    cut.write_bytes(data[: len(data) // 2])  # as if the recorder was SIGKILLed mid-write
    r = run(analyze_bin, cut, "--stats")
    assert r.returncode == 0, r.stderr
    assert "no (scanned)" in r.stdout
    assert "Recording: 1 segments" in r.stdout or "Recording: 2 segments" in r.stdout


def test_corrupt_segment_is_reported_not_fatal(run, analyze_bin, tmp_path):
    data = bytearray(FIXTURE.read_bytes())
    data[64 + 64 + 10] ^= 0xFF  # inside the first segment's payload
    bad = tmp_path / "bad.ptrace"
    bad.write_bytes(bytes(data))
    r = run(analyze_bin, bad)
    assert r.returncode == 0
    assert "Recording: 2 segments" in r.stdout
    assert "damaged and skipped; --stats tells what" in r.stderr
    r = run(analyze_bin, bad, "--stats")
    assert "checksum mismatch" in r.stdout


def test_several_files_at_once(run, analyze_bin, tmp_path):
    copy = tmp_path / "copy.ptrace"
    shutil.copy(FIXTURE, copy)
    r = run(analyze_bin, FIXTURE, copy)
    assert r.returncode == 0, r.stderr
    assert "Recording: 6 segments" in r.stdout


def test_errors_are_one_line_and_nonzero(run, analyze_bin, tmp_path):
    r = run(analyze_bin, tmp_path / "missing.ptrace")
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0
    assert "no such file or directory" in r.stderr

    text = tmp_path / "notes.txt"
    text.write_text("just some text that is long enough to have a header's worth of bytes\n" * 2)
    r = run(analyze_bin, text)
    assert r.returncode == 1
    assert "not a .ptrace file" in r.stderr

    newer = bytearray(FIXTURE.read_bytes())
    newer[8] = 2  # file version major
    p = tmp_path / "newer.ptrace"
    p.write_bytes(bytes(newer))
    r = run(analyze_bin, p)
    assert r.returncode == 1
    assert "trace format v2 is newer than this build (reads up to v1)" in r.stderr

    r = run(analyze_bin, FIXTURE, "SELECT count(*) FROM python.nope")
    assert r.returncode == 1
    assert "no such table: python.nope; known tables:" in r.stderr


def test_usage(run, analyze_bin):
    assert run(analyze_bin).returncode == 2
    assert run(analyze_bin, "--no-such-flag", FIXTURE).returncode == 2
    h = run(analyze_bin, "--help")
    assert h.returncode == 0 and "--stats" in h.stdout


def test_sql_on_a_recording(run, analyze_bin):
    r = run(analyze_bin, FIXTURE, "--format", "json",
            "SELECT module, stage, count(*) AS n FROM python.torch_trace GROUP BY 1, 2 ORDER BY 2")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"module": "layer1.0.conv1", "stage": "backward", "n": 3},
                                    {"module": "layer1.0.conv1", "stage": "forward", "n": 3}]
    r = run(analyze_bin, FIXTURE, "SELECT pid, rank FROM system.process")
    assert r.returncode == 0 and "4242" in r.stdout


def test_summary_rows_at_full_precision(run, analyze_bin):
    r = run(analyze_bin, FIXTURE, "--format", "json")
    assert r.returncode == 0, r.stderr
    fig = {(x["section"], x["name"], x["metric"]): x["value"] for x in json.loads(r.stdout)}
    assert fig[("functions", "forward (model.py)", "samples")] == 6
    assert abs(fig[("modules_by_total", "layer1.0.conv1 forward", "seconds")] - 0.0045) < 1e-12
    assert fig[("memory", "rss_bytes", "peak")] == 123456789  # bytes, not MB
    r = run(analyze_bin, FIXTURE)
    assert "RSS            123 MB" in r.stdout


def test_lines_split_frames_and_empty_exports_fail(run, analyze_bin):
    r = run(analyze_bin, FIXTURE, "--folded", "-", "--lines")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "MainThread (4242);<module> (train.py:40);train_step (train.py:14);forward (model.py:25) 3",
        "MainThread (4242);<module> (train.py:40);train_step (train.py:14);forward (model.py:26) 3"]
    r = run(analyze_bin, FIXTURE, "--flamegraph", "-", "--thread", "1")
    assert r.returncode == 1 and r.stdout == ""
    assert "no stack samples with Python frames to export" in r.stderr
