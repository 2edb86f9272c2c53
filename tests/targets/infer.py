"""Inference only (no optimizer): a small model called in a loop; prints "ready" after the first
call, then runs until killed or for argv[1] calls."""
import sys
import time

import torch
from torch import nn

model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
x = torch.randn(2, 16)
n = int(sys.argv[1]) if len(sys.argv) > 1 else 0
with torch.no_grad():
    model(x)
    print("ready", flush=True)
    i = 1
    while n == 0 or i < n:
        model(x)
        i += 1
        time.sleep(0.002)
