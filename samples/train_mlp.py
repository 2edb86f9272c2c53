"""A small training job for the demo and the tests: an 8-layer MLP on synthetic data, CPU.

    python3 samples/train_mlp.py [--steps N] [--width W] [--layers L] [--batch B]
                                                 # default: 8 layers 128 wide, until killed

Prints one line per 50 steps (step, loss, ms/step).
"""
import argparse
import itertools
import sys
import time

import torch
from torch import nn


def make_model(width=128, layers=8):
    blocks = []
    for _ in range(layers - 1):
        blocks += [nn.Linear(width, width), nn.ReLU()]
    blocks.append(nn.Linear(width, 10))
    return nn.Sequential(*blocks)


def train_step(model, opt, loss_fn, x, y):
    opt.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return loss


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=0, help="steps to run (0: until killed)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=int, default=128, help="features of every layer")
    p.add_argument("--layers", type=int, default=8, help="Linear layers (ReLU between them)")
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = make_model(args.width, args.layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(args.batch, args.width)
    y = torch.randint(0, 10, (args.batch,))
    t = time.perf_counter()
    steps = range(args.steps) if args.steps else itertools.count()
    for step in steps:
        loss = train_step(model, opt, loss_fn, x, y)
        if step % 50 == 49:
            now = time.perf_counter()
            print("step %d loss %.4f %.2f ms/step" % (step + 1, loss.item(), (now - t) / 50 * 1e3),
                  flush=True)
            t = now


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C, or `probing record` ending first: stop without a traceback
        sys.exit(130)
