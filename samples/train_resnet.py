"""Trains torchvision's ResNet-18 (random init) on synthetic data, on the CPU: the demo's and the
tests' realistic workload (in-place ReLUs, batch norm, residual blocks).

    python3 samples/train_resnet.py [--steps N] [--batch 8] [--size 64]   # default: until killed

Prints one line per 10 steps (step, loss, ms/step).
"""
import argparse
import itertools
import sys
import time

import torch
import torchvision
from torch import nn


def train_step(model, opt, loss_fn, images, labels):
    opt.zero_grad()
    loss = loss_fn(model(images), labels)
    loss.backward()
    opt.step()
    return loss


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=0, help="steps to run (0: until killed)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--every", type=int, default=10, help="print a line every N steps")
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torchvision.models.resnet18(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    images = torch.randn(args.batch, 3, args.size, args.size)
    labels = torch.randint(0, 10, (args.batch,))
    t = time.perf_counter()
    steps = range(args.steps) if args.steps else itertools.count()
    for step in steps:
        loss = train_step(model, opt, loss_fn, images, labels)
        if step % args.every == args.every - 1:
            now = time.perf_counter()
            print("step %d loss %.6f %.2f ms/step" % (step + 1, loss.item(),
                                                      (now - t) / args.every * 1e3), flush=True)
            t = now


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C, or `probing record` ending first: stop without a traceback
        sys.exit(130)
