"""roofseg: small-data roof segmentation experiments (library; never imports streamlit).

The torchvision guard is imported first so that timm/smp import on a CPU-only torch.

OpenMP's wait policy is left as the environment sets it. On a quiet 2-core machine libgomp's
default (threads spin a while before sleeping) made a 2-thread epoch 20% faster than
OMP_WAIT_POLICY=PASSIVE; on a machine whose cores other processes want, spinning made it 2.3x
slower than 1 thread, where PASSIVE kept it on par (bench/threads.py, BENCHMARKS.md). On a shared
machine, export OMP_WAIT_POLICY=PASSIVE or set num_threads=1.
"""
from . import _tvguard  # noqa: F401  (must run before anything imports timm or smp)

__version__ = "0.1.0"
