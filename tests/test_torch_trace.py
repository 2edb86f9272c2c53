"""PyTorch module tracing and variable tracking (python.torch_trace, python.variables) against
the samples under Debian's /usr/bin/python3 with torch: every module each traced step, dense
seq, durations that add up, NULL memory on CPU, identical training, variables, sampling, and
switching off at run time."""
import collections
import json
import os
import re
import statistics
import subprocess
import time

import pytest

from conftest import BUILD, ROOT, read_table
from control_client import request, wait_for_server

PY = "/usr/bin/python3"


def _has_torch():
    return os.path.exists(PY) and subprocess.run(
        [PY, "-c", "import torch, torchvision"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _has_torch(), reason="needs torch and torchvision for %s" % PY)


# Tests that expect every step the sample rate picks to be traced turn the overhead budget off;
# the budget's tests below run with it.
NO_BUDGET = {"PROBING_TORCH_BUDGET": "off"}


def run_sample(tmp_path, script, *args, probing="1", env=None, timeout=300):
    """Runs samples/SCRIPT under the recorder; `env` over the budget off (a value of None
    removes a variable: the recorder's default)."""
    e = dict(os.environ)
    e.pop("PYTHONPATH", None)
    e.update({"PROBING": probing, "PROBING_DATA_DIR": str(tmp_path / "data"),
              "PYTHONUSERBASE": str(BUILD / "pyuser"), **NO_BUDGET})
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    r = subprocess.run([PY, str(ROOT / "samples" / script), *map(str, args)], capture_output=True,
                       text=True, env=e, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return r


def data_dir(tmp_path):
    (d,) = list((tmp_path / "data").iterdir())
    return d


MLP_LEAVES = {str(i) for i in range(15)} | {"CrossEntropyLoss"}


# Both ways of seeing module calls (probing.torch.calls): torch 1.x's default and 2.x's.
CALLS = pytest.mark.parametrize("calls", ["wrap", "hooks"])


@CALLS
def test_every_module_each_step_with_dense_seq_and_consistent_durations(tmp_path, analyze_bin,
                                                                         calls):
    r = run_sample(tmp_path, "train_mlp.py", "--steps", 100, env={"PROBING_TORCH_CALLS": calls})
    rows = read_table(analyze_bin, [data_dir(tmp_path)], "python.torch_trace")
    by_step = collections.defaultdict(list)
    for row in rows:
        by_step[row["step"]].append(row)
    assert sorted(by_step) == list(range(100))
    for step, rs in by_step.items():
        assert sorted(x["seq"] for x in rs) == list(range(len(rs))), step
        fwd = {x["module"] for x in rs if x["stage"] == "forward"}
        bwd = {x["module"] for x in rs if x["stage"] == "backward"}
        assert MLP_LEAVES | {"Sequential"} == fwd, step
        assert MLP_LEAVES | {"Sequential"} == bwd, step
        assert [x["module"] for x in rs if x["stage"] == "step"] == ["SGD"]
        assert max(rs, key=lambda x: x["seq"])["stage"] == "step"
        assert all(x["allocated"] is None and x["max_allocated"] is None and x["cached"] is None
                   for x in rs)
        assert all(x["duration"] >= 0 and x["thread_id"] > 0 for x in rs)
    # The top-level rows (the roots' forward and backward, the optimizer step) add up to the
    # step time the sample measures itself (its second line: steps 51-100).
    ms = float(re.findall(r"step 100 loss \S+ (\S+) ms/step", r.stdout)[0])
    top = [sum(x["duration"] for x in by_step[s]
               if x["module"] in ("Sequential", "CrossEntropyLoss", "SGD")) for s in range(50, 100)]
    assert abs(sum(top) / len(top) * 1e3 - ms) / ms < 0.2, (sum(top) / len(top) * 1e3, ms)
    # Children nest inside their parent.
    s = by_step[60]
    seq_fwd = {x["module"]: x for x in s if x["stage"] == "forward"}
    assert seq_fwd["Sequential"]["duration"] >= sum(
        seq_fwd[m]["duration"] for m in MLP_LEAVES - {"CrossEntropyLoss"})
    assert seq_fwd["Sequential"]["time"] <= seq_fwd["0"]["time"]


@CALLS
def test_inplace_relu_resnet_trains_identically_with_qualified_names(tmp_path, analyze_bin, calls):
    plain = run_sample(tmp_path / "plain", "train_resnet.py", "--steps", 5, "--every", 5,
                       probing="0")
    traced = run_sample(tmp_path, "train_resnet.py", "--steps", 5, "--every", 5,
                        env={"PROBING_TORCH_CALLS": calls})
    loss = lambda out: float(re.search(r"loss (\S+)", out).group(1))
    assert abs(loss(plain.stdout) - loss(traced.stdout)) < 1e-6
    rows = read_table(analyze_bin, [data_dir(tmp_path)], "python.torch_trace")
    names = {x["module"] for x in rows}
    assert {"ResNet", "conv1", "layer1.0.conv1", "layer1.0.relu", "layer4.1.bn2", "fc"} <= names
    step2 = [x for x in rows if x["step"] == 2]
    for leaf in ("layer1.0.conv1", "layer3.1.conv2", "fc"):
        assert {x["stage"] for x in step2 if x["module"] == leaf} == {"forward", "backward"}
    # ReLU(inplace=True) is used twice per block: two forward rows in call order.
    relu = [x for x in step2 if x["module"] == "layer1.0.relu" and x["stage"] == "forward"]
    assert len(relu) == 2


def test_variables_match_what_the_sample_prints(tmp_path, analyze_bin):
    r = run_sample(tmp_path, "train_mlp.py", "--steps", 100,
                   env={"PROBE_TORCH_EXPRS": "loss@train_step, x@main"})
    rows = read_table(analyze_bin, [data_dir(tmp_path)], "python.variables")
    loss = {x["step"]: x["value"] for x in rows if x["name"] == "loss"}
    assert sorted(loss) == list(range(100))
    assert all(x["func"] == "train_step" for x in rows if x["name"] == "loss")
    printed = [float(v) for v in re.findall(r"loss (\S+)", r.stdout)]
    assert [round(float(loss[49]), 4), round(float(loss[99]), 4)] == printed
    x = [v for v in rows if v["name"] == "x"]
    assert x and x[0]["func"] == "main" and x[0]["value"].startswith("tensor(")
    assert len(x[0]["value"]) <= 200


def test_sample_rate_from_the_environment(tmp_path, analyze_bin):
    run_sample(tmp_path, "train_mlp.py", "--steps", 40, env={"PROBING_SAMPLE_RATE": "0.25"})
    rows = read_table(analyze_bin, [data_dir(tmp_path)], "python.torch_trace")
    assert sorted({x["step"] for x in rows}) == [3, 7, 11, 15, 19, 23, 27, 31, 35, 39]


def test_off_from_the_environment(tmp_path, analyze_bin):
    run_sample(tmp_path, "train_mlp.py", "--steps", 20, env={"PROBING_TORCH_PROFILING": "off"})
    assert read_table(analyze_bin, [data_dir(tmp_path)], "python.torch_trace") == []


def test_switching_off_and_on_at_run_time(tmp_path, probing_bin, run):
    e = dict(os.environ, PROBING="1", PROBING_DATA_DIR=str(tmp_path / "data"),
             PYTHONUSERBASE=str(BUILD / "pyuser"))
    p = subprocess.Popen([PY, str(ROOT / "samples" / "train_mlp.py")], env=e,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_server(p.pid)
        deadline = time.time() + 60
        while request(p.pid, "GET", "/info")[1]["torch"]["step"] < 20:
            assert time.time() < deadline
            time.sleep(0.1)
        r = run(probing_bin, "-t", p.pid, "config", "probing.torch.enabled=false")
        assert r.returncode == 0, r.stderr
        step_at_off = request(p.pid, "GET", "/info")[1]["torch"]["step"]
        time.sleep(0.5)
        info = request(p.pid, "GET", "/info")[1]["torch"]
        assert info["hooks_installed"] is False and info["step"] > step_at_off
        time.sleep(2.5)  # rings are sealed every second

        def last_step():
            r = run(probing_bin, "-t", p.pid, "--format", "json", "query",
                    "SELECT max(step) AS s FROM python.torch_trace")
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)[0]["s"]

        off = last_step()
        assert off <= step_at_off + 1
        time.sleep(1.5)
        assert last_step() == off
        run(probing_bin, "-t", p.pid, "config", "probing.torch.enabled=true")
        time.sleep(2.5)
        assert last_step() > off + 1
    finally:
        p.kill()
        p.wait()


@CALLS
def test_a_raising_module_passes_its_exception_through(tmp_path, target, analyze_bin, calls):
    plain = subprocess.run([PY, str(ROOT / "tests" / "targets" / "raising.py")],
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    t = target(PY, "raising.py", extra_env={"PROBING_TORCH_CALLS": calls, **NO_BUDGET})
    code, out, err = t.finish()
    assert code == 0, err
    assert out == plain.stdout and out.count("caught ValueError flaky call") == 4
    assert "forward" in out.splitlines()[0] and "turned off" not in err
    rows = read_table(analyze_bin, [t.data_dir / str(t.proc.pid)], "python.torch_trace")
    # 8 optimizer steps; in each, every module forward and backward, then the step. A failed
    # attempt's calls belong to the step they ran in: the calls that completed (the first
    # Linear) are rows, the raising ones are not, and seq stays dense.
    steps = collections.defaultdict(list)
    for row in rows:
        steps[row["step"]].append(row)
    assert sorted(steps) == list(range(8))
    for step, rs in steps.items():
        assert sorted(x["seq"] for x in rs) == list(range(len(rs)))
        forward = sorted(x["module"] for x in rs if x["stage"] == "forward")
        retried = ["0"] if step in (2, 4, 6) else []
        assert forward == sorted(["0", "1", "2", "Sequential"] + retried), step
        assert sorted(x["module"] for x in rs if x["stage"] == "backward") == [
            "0", "1", "2", "Sequential"]


def test_switching_how_calls_are_seen_at_run_time(tmp_path, probing_bin, run):
    e = dict(os.environ, PROBING="1", PROBING_DATA_DIR=str(tmp_path / "data"),
             PYTHONUSERBASE=str(BUILD / "pyuser"), **NO_BUDGET)
    p = subprocess.Popen([PY, str(ROOT / "samples" / "train_mlp.py")], env=e,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    call = ("import torch; m = torch.nn.Module; "
            "'original' if m.__dict__['__call__'] is m.__dict__['_call_impl'] "
            "else type(m.__dict__['__call__']).__name__")

    def seen():
        s, r = request(p.pid, "POST", "/eval", {"code": call})
        assert s == 200, r
        return r["value"].strip("'")

    def after_steps(n):
        step = request(p.pid, "GET", "/info")[1]["torch"]["step"]
        deadline = time.time() + 60
        while request(p.pid, "GET", "/info")[1]["torch"]["step"] < step + n:
            assert time.time() < deadline
            time.sleep(0.05)

    try:
        wait_for_server(p.pid)
        after_steps(5)
        assert seen() == "ModuleCall"  # torch 1.x: the wrapper by default
        for key, value, expected in [("probing.torch.calls", "hooks", "original"),
                                     ("probing.torch.calls", "wrap", "ModuleCall"),
                                     ("probing.torch.enabled", "false", "original"),
                                     ("probing.torch.enabled", "true", "ModuleCall")]:
            r = run(probing_bin, "-t", p.pid, "config", "%s=%s" % (key, value))
            assert r.returncode == 0, r.stderr
            after_steps(2)
            assert seen() == expected, (key, value)
        r = run(probing_bin, "-t", p.pid, "config", "probing.torch.calls=sometimes")
        assert r.returncode != 0 and "must be auto, wrap or hooks" in r.stderr
    finally:
        p.kill()
        p.wait()


def test_inference_steps_are_outermost_forwards(tmp_path, target, analyze_bin):
    t = target(PY, "infer.py", 50, extra_env=NO_BUDGET)
    t.wait_ready()
    code, out, err = t.finish()
    assert code == 0, err
    rows = read_table(analyze_bin, [t.data_dir / str(t.proc.pid)], "python.torch_trace")
    steps = collections.defaultdict(list)
    for row in rows:
        steps[row["step"]].append(row)
    assert len(steps) == 50
    assert all(sorted(x["module"] for x in rs) == ["0", "1", "2", "Sequential"]
               for rs in steps.values())
    assert all(x["stage"] == "forward" for x in rows)


@CALLS
def test_cuda_memory_is_read_for_every_stage(tmp_path, target, analyze_bin, calls):
    # torch.cuda's counters stood in by the target (no GPU here): every stage's rows carry them
    # once CUDA counts as initialized (the tracer learns it at the end of the first step).
    t = target(PY, "cuda_counters.py", extra_env={"PROBING_TORCH_CALLS": calls, **NO_BUDGET})
    code, out, err = t.finish()
    assert code == 0 and out.strip() == "done", err
    rows = read_table(analyze_bin, [t.data_dir / str(t.proc.pid)], "python.torch_trace")
    later = [r for r in rows if r["step"] >= 1]
    assert {r["stage"] for r in later} == {"forward", "backward", "step"}
    for r in later:
        assert r["allocated"] is not None and r["allocated"] > 100, r
        assert r["max_allocated"] == 500.0 and r["cached"] == 700.0, r
    # Read when each row ended: a backward row later than the forward rows of its step, the
    # step row last.
    for step in range(1, 6):
        rs = [r for r in later if r["step"] == step]
        fwd = max(r["allocated"] for r in rs if r["stage"] == "forward")
        bwd = [r["allocated"] for r in rs if r["stage"] == "backward"]
        (opt,) = [r["allocated"] for r in rs if r["stage"] == "step"]
        assert min(bwd) > fwd and opt > max(bwd), (step, rs)
    # python.memory's CUDA columns come from the same counters.
    mem = read_table(analyze_bin, [t.data_dir / str(t.proc.pid)], "python.memory")
    assert all(m["cuda_reserved"] in (None, 700 * 1024 * 1024) for m in mem)


# The overhead budget (probing.torch.budget): many tiny modules, where tracing a step costs a
# large share of it (8 features, 33 layers: 66 module calls in well under a millisecond).
TINY = ["--width", 8, "--layers", 33, "--batch", 4]


def steps_and_trace(analyze_bin, tmp_path):
    d = [data_dir(tmp_path)]
    return (read_table(analyze_bin, d, "python.torch_steps"),
            read_table(analyze_bin, d, "python.torch_trace"))


def test_the_budget_leaves_out_steps_of_tiny_modules_and_says_which(tmp_path, analyze_bin):
    run_sample(tmp_path, "train_mlp.py", "--steps", 1500, *TINY,
               env={"PROBING_TORCH_BUDGET": None})
    steps, trace = steps_and_trace(analyze_bin, tmp_path)
    # Every step is a row, once, with the default budget of 1%.
    assert sorted(s["step"] for s in steps) == list(range(1500))
    assert {s["budget"] for s in steps} == {0.01}
    traced = {s["step"] for s in steps if s["traced"]}
    # Exactly the traced steps have module rows, each with every module.
    by_step = collections.defaultdict(set)
    for r in trace:
        by_step[r["step"]].add((r["module"], r["stage"]))
    assert set(by_step) == traced
    # 33 Linear and 32 ReLU named 0-64, Sequential, CrossEntropyLoss: forward and backward each;
    # the optimizer step.
    assert all(len(v) == 2 * 67 + 1 for v in by_step.values())
    decisions = collections.Counter(s["decision"] for s in steps)
    assert set(decisions) == {"traced", "budget"}, decisions
    assert all(s["traced"] == (s["decision"] == "traced") for s in steps)
    # Traced steps cost far more than the budget: few are traced, spread over the run (not all
    # at the start), and what the tracer counted stays near the budget.
    assert 0 < len(traced) < 0.5 * 1500, len(traced)
    assert min(traced) < 100 and max(traced) > 1000, sorted(traced)
    # On a stride of a power of two (which the balance may leave out, and which is 1 while the
    # balance stays full): most traced steps are multiples of 8, where one step in 8 would be.
    later = [s for s in traced if s >= 100]
    assert sum(s % 8 == 0 for s in later) >= 0.6 * len(later), sorted(traced)
    # The budget holds down what tracing adds: a traced step's cost beyond the bookkeeping that
    # every step pays (an untraced step's cost).
    later = [s for s in steps if s["step"] >= 100]
    bookkeeping = statistics.median(s["cost"] for s in later if not s["traced"])
    added = sum(s["cost"] - bookkeeping for s in later if s["traced"])
    assert added / sum(s["duration"] for s in later) < 0.013, (added, bookkeeping)
    costly = [s["cost"] / s["duration"] for s in later if s["traced"]]
    assert min(costly) > 0.02, costly  # what made it leave the others out
    for s in steps:
        assert s["duration"] > 0 and s["cost"] >= 0 and s["thread_id"] > 0, s


def test_processes_deciding_alone_trace_the_same_steps(tmp_path, analyze_bin):
    # Two processes of one tiny model, one after the other, each under its own budget, as ranks
    # on two hosts are: many steps that each traced, the other traced too (strides of powers
    # of two nest).
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        run_sample(d, "train_mlp.py", "--steps", 1500, *TINY, env={"PROBING_TORCH_BUDGET": None})
    # (Steps 0 and 1 are traced by both: the first traced step is not charged.) Drawn
    # independently at the shares traced, the steps both traced would be about one; a process
    # whose balance was owed on a step of its stride (noise: a busy machine) leaves
    # that one out, and the strides may differ.
    a, b = ({s["step"] for s in steps_and_trace(analyze_bin, d)[0] if s["traced"] and s["step"] > 1}
            for d in dirs)
    assert 3 <= len(a) < 500 and 3 <= len(b) < 500, (sorted(a), sorted(b))
    chance = len(a) * len(b) / 1500
    assert len(a & b) >= max(3, 5 * chance, 0.5 * min(len(a), len(b))), (sorted(a), sorted(b))


def test_without_a_budget_every_step_is_traced_and_its_cost_still_measured(tmp_path, analyze_bin):
    run_sample(tmp_path, "train_mlp.py", "--steps", 300, *TINY,
               env={"PROBING_TORCH_BUDGET": "off", "PROBING_SAMPLE_RATE": "0.5"})
    steps, trace = steps_and_trace(analyze_bin, tmp_path)
    assert sorted(s["step"] for s in steps) == list(range(300))
    assert all(s["budget"] is None for s in steps)
    traced = sorted(s["step"] for s in steps if s["traced"])
    assert traced == list(range(1, 300, 2)) == sorted({r["step"] for r in trace})
    assert {s["decision"] for s in steps if not s["traced"]} == {"sample_rate"}
    # A traced step of tiny modules costs many times 1% of it; an untraced one far less.
    cost = lambda t: statistics.median(s["cost"] / s["duration"] for s in steps
                                       if s["traced"] == t and s["step"] >= 10)
    assert cost(1) > 0.03 and cost(0) < cost(1) / 4, (cost(1), cost(0))


def test_the_budget_is_shown_by_info_and_set_at_run_time(tmp_path, probing_bin, run):
    e = dict(os.environ, PROBING="1", PROBING_DATA_DIR=str(tmp_path / "data"),
             PYTHONUSERBASE=str(BUILD / "pyuser"))
    e.pop("PROBING_TORCH_BUDGET", None)
    p = subprocess.Popen([PY, str(ROOT / "samples" / "train_mlp.py"),
                          *map(str, TINY)], env=e,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_server(p.pid)

        def budget_after(steps):
            start = request(p.pid, "GET", "/info")[1]["torch"]["step"]
            deadline = time.time() + 60
            while True:
                torch = request(p.pid, "GET", "/info")[1]["torch"]
                if torch["step"] >= start + steps:
                    return torch["budget"]
                assert time.time() < deadline
                time.sleep(0.05)

        b = budget_after(500)
        assert b["fraction"] == 0.01 and b["calibrated"] is True
        assert 0 < b["traced_share"] < 0.5 and b["left_out"] > 100, b
        assert b["cost_share"] < 0.03 and b["traced_step_cost_ms"] > 0, b
        assert b["wrap_call_ns"] >= 0 and b["hook_call_ns"] > 0 and b["grad_hook_ns"] >= 0, b
        assert b["stride"] >= 1 and b["stride"] & (b["stride"] - 1) == 0, b  # a power of two
        r = run(probing_bin, "-t", p.pid, "config", "probing.torch.budget=off")
        assert r.returncode == 0, r.stderr
        b = budget_after(300)
        assert b["fraction"] is None and b["traced_share"] > 0.9 and b["stride"] == 1, b
        for bad in ("2x", "0.001%", "101", "-1"):
            r = run(probing_bin, "-t", p.pid, "config", "probing.torch.budget=" + bad)
            assert r.returncode != 0 and "from 0.01% to 100%" in r.stderr, (bad, r.stderr)
        r = run(probing_bin, "-t", p.pid, "config", "probing.torch.budget=50")
        assert r.returncode == 0, r.stderr
        r = run(probing_bin, "-t", p.pid, "--format", "json", "config")
        assert {"name": "probing.torch.budget", "value": "50%"}.items() <= next(
            c for c in json.loads(r.stdout) if c["name"] == "probing.torch.budget").items()
    finally:
        p.kill()
        p.wait()
