"""A CPU training loop with torch.cuda's memory counters stood in (this machine has no GPU):
torch.cuda.is_available/is_initialized say True and memory_allocated, max_memory_allocated and
memory_reserved return known values that grow by one MiB a call, so each python.torch_trace row
shows which read it got. The model stays on the CPU. Prints "done" after 6 optimizer steps."""
import torch
from torch import nn

MIB = 1 << 20
calls = [0]


def allocated(device=None):
    calls[0] += 1
    return (100 + calls[0]) * MIB


torch.cuda.is_available = lambda: True
torch.cuda.is_initialized = lambda: True
torch.cuda.memory_allocated = allocated
torch.cuda.max_memory_allocated = lambda device=None: 500 * MIB
torch.cuda.memory_reserved = lambda device=None: 700 * MIB

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(4, 8), torch.randint(0, 2, (4,))
for step in range(6):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
print("done", flush=True)
