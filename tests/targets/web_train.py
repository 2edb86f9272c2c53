"""A small training loop for the dashboard's tests: each step builds its batch in pure Python
(prepare_batch: the hot function of the stacks and the flame graph), then trains a 3-layer MLP
on it. Prints "ready" after the first step.

    PROBE_TORCH_EXPRS=loss@train_step python3 tests/targets/web_train.py [SECONDS]
"""
import sys
import time

import torch
from torch import nn


def prepare_batch(rows, cols):
    batch = []
    for i in range(rows):
        row = []
        for j in range(cols):
            v = 0
            for k in range(64):  # HOT-LINE
                v = (v * 31 + i * 7 + j * 3 + k) % 1009
            row.append(v / 1009.0)
        batch.append(row)
    return batch


def train_step(model, opt, x, y):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    y = torch.randint(0, 10, (64,))
    deadline = time.time() + seconds
    step = 0
    while time.time() < deadline:
        x = torch.tensor(prepare_batch(64, 32))
        train_step(model, opt, x, y)
        if step == 0:
            print("ready", flush=True)
        step += 1
        time.sleep(0.002)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
