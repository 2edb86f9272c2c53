"""Recording size and load speed, each against a baseline in the same run.

Records ResNet-18 training (samples/train_resnet.py, CPU) for --seconds with the recorder's
defaults (100 Hz stack sampling, every module traced), then:

  size: bytes per stack sample and per torch_trace row in the .ptrace file (the stream's
        segments, headers included; `probing record`'s default zstd level) against the same
        rows exported as CSV (times to the microsecond, durations to the nanosecond) and
        compressed with zstd at -3 and -19, per stream;
  load: rows per second probing-analyze puts into SQLite (its --stats figure; median of --runs)
        against sqlite3's own `.import --csv` of the same rows (median of --runs).

    /usr/bin/python3 bench/recording_size_load.py [--seconds 60] [--runs 5]
"""
import argparse
import os
import pathlib
import statistics
import struct
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "build" / "bin"
STREAMS = {1: "stacks", 2: "torch", 3: "memory", 4: "variables", 5: "metrics"}


def stream_bytes(path):
    """{stream name: bytes of its segments} from the segment headers of a .ptrace file."""
    data = path.read_bytes()
    at, out = 64, {}
    while at + 64 <= len(data) and data[at:at + 4] == b"PSEG":
        stream = data[at + 9]
        header, payload = struct.unpack_from("<HI", data, at + 10)
        size = header + payload
        name = STREAMS.get(stream, "mixed")
        out[name] = out.get(name, 0) + size
        at += size
    return out


def analyze(path, *args):
    r = subprocess.run([str(BIN / "probing-analyze"), str(path), *args], capture_output=True,
                       text=True, check=True)
    return r.stdout


def count(path, sql):
    return int(analyze(path, sql, "--format", "csv").splitlines()[1])


def zstd_size(data, level):
    r = subprocess.run(["zstd", "-q", "-c", "-%d" % level], input=data, capture_output=True,
                       check=True)
    return len(r.stdout)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="probing-bench-record-"))
    rec = tmp / "resnet.ptrace"
    env = dict(os.environ, PROBING_DATA_DIR=str(tmp / "data"))
    print("recording %g s of ResNet-18 training ..." % args.seconds, flush=True)
    subprocess.run([str(BIN / "probing"), "record", "-o", str(rec), "--duration", str(args.seconds),
                    "--", "/usr/bin/python3", str(ROOT / "samples" / "train_resnet.py")],
                   env=env, check=True, stdout=subprocess.DEVNULL)

    sizes = stream_bytes(rec)
    samples = count(rec, "SELECT count(DISTINCT sample_id) FROM python.stacks")
    frames = count(rec, "SELECT count(*) FROM python.stacks")
    torch_rows = count(rec, "SELECT count(*) FROM python.torch_trace")
    # The same rows as CSV, times to the microsecond and durations to the nanosecond (the file
    # keeps nanoseconds throughout, so the CSV holds a little less than it).
    stacks_csv = analyze(rec, "SELECT printf('%.6f', ts) AS ts, thread_id, thread_name, sample_id, "
                         "depth, func, file, lineno, holds_gil, pid FROM python.stacks",
                         "--format", "csv").encode()
    torch_csv = analyze(rec, "SELECT step, seq, module, stage, allocated, max_allocated, cached, "
                        "printf('%.9f', duration) AS duration, printf('%.6f', time) AS time, "
                        "thread_id, rank, pid FROM python.torch_trace", "--format", "csv").encode()
    (tmp / "stacks.csv").write_bytes(stacks_csv)

    print("\nSize (%s: %d stack samples = %d frame rows, %d torch_trace rows; %d bytes in all)"
          % (rec.name, samples, frames, torch_rows, rec.stat().st_size))
    print("%-22s %14s %14s %14s %10s" % ("", ".ptrace", "CSV+zstd -3", "CSV+zstd -19", "ratio -19"))
    for label, ours, csv, n in (("per stack sample", sizes.get("stacks", 0), stacks_csv, samples),
                                ("per torch_trace row", sizes.get("torch", 0), torch_csv, torch_rows)):
        z3, z19 = zstd_size(csv, 3), zstd_size(csv, 19)
        print("%-22s %12.2f B %12.2f B %12.2f B %10.3f" % (label, ours / n, z3 / n, z19 / n,
                                                           ours / z19))

    ours, theirs = [], []
    for _ in range(args.runs):
        out = analyze(rec, "SELECT count(*) FROM python.stacks", "--stats")
        line = [l for l in out.splitlines() if l.startswith("SQLite:")][0]
        ours.append(float(line.split("(")[1].split()[0]) * 1e6)
        t0 = time.perf_counter()
        subprocess.run(["sqlite3", ":memory:", ".import --csv %s stacks" % (tmp / "stacks.csv"),
                        "SELECT count(*) FROM stacks;"], check=True, capture_output=True)
        theirs.append(frames / (time.perf_counter() - t0))
    all_rows = count(rec, "SELECT (SELECT count(*) FROM python.stacks) + (SELECT count(*) FROM "
                     "python.torch_trace) + (SELECT count(*) FROM python.memory) + (SELECT "
                     "count(*) FROM python.variables) + (SELECT count(*) FROM python.metrics) + "
                     "(SELECT count(*) FROM system.process)")
    print("\nLoad into SQLite (median of %d runs)" % args.runs)
    print("  probing-analyze: %.2f M rows/s (%d rows, every table)" % (statistics.median(ours) / 1e6,
                                                                       all_rows))
    print("  sqlite3 .import --csv of python.stacks: %.2f M rows/s (%d rows, whole process)"
          % (statistics.median(theirs) / 1e6, frames))
    print("  ratio: %.2f" % (statistics.median(ours) / statistics.median(theirs)))


if __name__ == "__main__":
    main()
