"""Training where a module raises on every third step: the step is caught and skipped. Prints,
per caught error, the exception's type and message and the innermost frame's function, then
"done". Tracing must pass the exception through unchanged."""
import torch
from torch import nn


class Flaky(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls % 3 == 0:
            raise ValueError("flaky call %d" % self.calls)
        return x * 2


torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 8), Flaky(), nn.Linear(8, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(4, 8), torch.randint(0, 2, (4,))
for step in range(12):
    opt.zero_grad()
    try:
        loss = nn.functional.cross_entropy(model(x), y)
    except ValueError as e:
        tb = e.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        print("caught", type(e).__name__, e, tb.tb_frame.f_code.co_name, flush=True)
        continue
    loss.backward()
    opt.step()
print("done", flush=True)
