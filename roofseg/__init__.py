"""roofseg: small-data roof segmentation experiments (library; never imports streamlit).

Before torch loads: OpenMP threads that wait go to sleep instead of spinning (OMP_WAIT_POLICY=
PASSIVE, unless the environment sets it). On a laptop or a shared machine where other processes
(the app, a browser, another run) want the same cores, spinning threads made a 2-thread epoch
2.3x slower than a 1-thread one; passive, they are as fast (bench/threads.py, BENCHMARKS.md).
It only takes effect when roofseg is imported before torch, as in the CLI, the workers and the app.

The torchvision guard is imported next so that timm/smp import on a CPU-only torch.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import _tvguard  # noqa: E402,F401  (must run before anything imports timm or smp)

__version__ = "0.1.0"
