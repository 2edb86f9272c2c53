"""A small data-parallel training job: an MLP on random data under DistributedDataParallel,
gloo (CPU). Each rank runs this file with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT, TORCHELASTIC_RUN_ID), or torchrun starts them:

    PROBING=1 torchrun --nproc_per_node 4 --redirects 1 --tee 1 --log_dir /tmp/logs \\
        samples/train_ddp.py --steps 200

Faults to diagnose, each on one rank: --slow-rank R (sleeps --slow-ms in every step from step
--slow-from, in `slow_data_loading`), --hang-rank R (stops for ever, in `wait_for_a_lock_forever`, before the
collective of step --hang-step), --gil-rank R (holds the GIL in a regex from step --gil-step),
--mismatch-rank R (at step --hang-step calls a broadcast where the others all-reduce; needs
--allreduce-loss, which all-reduces each step's loss from Python, as loggers do).
Each rank prints "rank R ready" once its process group is up, and "rank R step N" every 20 steps.
"""
import argparse
import os
import re
import sys
import threading
import time

import torch
import torch.distributed as dist
import torch.nn as nn


def slow_data_loading(ms):
    time.sleep(ms / 1000.0)


def wait_for_a_lock_forever():
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()  # ours already: never returns


def hold_the_gil():
    re.match(r"(a+)+$", "a" * 34 + "!")  # catastrophic backtracking in C: minutes, GIL held


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100000)
    p.add_argument("--pace-ms", type=float, default=0, help="sleep per step (all ranks)")
    p.add_argument("--slow-rank", type=int, default=-1)
    p.add_argument("--slow-ms", type=float, default=60)
    p.add_argument("--slow-from", type=int, default=0, help="the step the slow rank slows from")
    p.add_argument("--hang-rank", type=int, default=-1)
    p.add_argument("--hang-step", type=int, default=30)
    p.add_argument("--gil-rank", type=int, default=-1)
    p.add_argument("--gil-step", type=int, default=30)
    p.add_argument("--mismatch-rank", type=int, default=-1)
    p.add_argument("--allreduce-loss", action="store_true",
                   help="all-reduce each step's loss from Python (a collective per step)")
    args = p.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(16, 32)
    y = torch.randint(0, 10, (16,))
    print("rank %d ready" % rank, flush=True)
    began = time.perf_counter()
    for step in range(args.steps):
        if rank == args.slow_rank and step >= args.slow_from:
            if step == args.slow_from and step > 0:
                print("rank %d slow from step %d" % (rank, step), flush=True)
            slow_data_loading(args.slow_ms)
        if rank == args.hang_rank and step == args.hang_step:
            print("rank %d hangs before step %d" % (rank, step), flush=True)
            wait_for_a_lock_forever()
        if rank == args.gil_rank and step == args.gil_step:
            print("rank %d holds the GIL" % rank, flush=True)
            hold_the_gil()
        opt.zero_grad()
        loss = loss_fn(ddp(x), y)
        loss.backward()  # DDP's gradient all-reduce, issued from C++
        opt.step()
        if args.allreduce_loss:
            mean_loss = loss.detach().clone()
            if rank == args.mismatch_rank and step == args.hang_step:
                print("rank %d broadcasts where the others all-reduce" % rank, flush=True)
                dist.broadcast(mean_loss, src=0)
            else:
                dist.all_reduce(mean_loss)
        if args.pace_ms:
            time.sleep(args.pace_ms / 1000.0)
        if step % 20 == 0:
            print("rank %d step %d loss %.4f" % (rank, step, loss.item()), flush=True)
    seconds = time.perf_counter() - began
    dist.barrier()
    dist.destroy_process_group()
    print("rank %d done: %d steps in %.3f s" % (rank, args.steps, seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
