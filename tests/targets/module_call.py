"""The recorder's replacement for nn.Module.__call__ (probing.torch.calls=wrap) on a plain class,
so that every interpreter runs it, torch or not: bound through subclasses, positional and
keyword arguments passed through, the original's signature and names, an exception passed
through unchanged."""
import sys
rec = sys.modules["_probing_recorder"]
class M:
    def __call__(self, *a, **k):
        return ("orig", self.__class__.__name__, a, k)
class Sub(M):
    pass
orig = M.__dict__["__call__"]
M.__call__ = rec.module_call(orig)
print(Sub()(1, 2, x=3), M()(), Sub().__call__(5))
import inspect
print(inspect.signature(Sub().__call__), M.__call__.__qualname__, M.__call__.__wrapped__ is orig)
def boom(self): raise KeyError("k")
M.__call__ = rec.module_call(boom)
try:
    M()()
except KeyError as e:
    print("raised", repr(e))
