"""`probing rdma` against a fake sysfs tree (the real one has no devices on our machines): ports,
states, counters, rates between two readings, and the no-device and remote-target answers."""
import json
import subprocess
import time


def make_port(root, dev, port, state="4: ACTIVE", rate="100 Gb/sec (4X EDR)", **counters):
    d = root / dev / "ports" / str(port)
    (d / "counters").mkdir(parents=True)
    (d / "state").write_text(state + "\n")
    (d / "rate").write_text(rate + "\n")
    (d / "link_layer").write_text("InfiniBand\n")
    for name, value in counters.items():
        (d / "counters" / name).write_text("%d\n" % value)
    return d


def test_ports_counters_and_rates(tmp_path, probing_bin):
    root = tmp_path / "infiniband"
    p1 = make_port(root, "mlx5_0", 1, port_xmit_data=1000, port_rcv_data=2000,
                   port_xmit_packets=10, port_rcv_packets=20, port_rcv_errors=1)
    make_port(root, "mlx5_1", 1, state="1: DOWN", port_xmit_data=0, port_rcv_data=0)
    proc = subprocess.Popen([str(probing_bin), "rdma", "--sysfs", str(root), "--interval", "1",
                             "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(0.3)  # between the two readings: 1,000,000 4-byte words more sent
    (p1 / "counters" / "port_xmit_data").write_text("1001000\n")
    (p1 / "counters" / "port_xmit_packets").write_text("1010\n")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    rows = {(r["device"], r["port"]): r for r in json.loads(out)}
    a = rows[("mlx5_0", 1)]
    assert a["state"] == "ACTIVE" and a["rate"] == "100 Gb/sec (4X EDR)"
    assert a["tx_bytes"] == 1001000 * 4 and a["rx_bytes"] == 2000 * 4
    assert 3.0e6 < a["tx_bytes_per_s"] <= 4.0e6  # 4 MB over a little more than 1 s
    assert a["rx_bytes_per_s"] == 0 and a["errors"] == 1
    assert 900 < a["tx_packets_per_s"] <= 1000
    assert rows[("mlx5_1", 1)]["state"] == "DOWN"


def test_no_devices(tmp_path, run, probing_bin):
    for root in (tmp_path / "missing", tmp_path):
        r = run(probing_bin, "rdma", "--sysfs", root)
        assert r.returncode == 0 and "no RDMA devices found" in r.stdout


def test_remote_target_is_refused_with_a_reason(run, probing_bin):
    r = run(probing_bin, "-t", "example.org:9000", "rdma")
    assert r.returncode == 2 and "run it on the target's host" in r.stderr
