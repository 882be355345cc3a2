"""roofseg: small-data roof segmentation experiments (library; never imports streamlit).

Layers, each using only those below it (README "Development"): config -> data -> store -> model ->
engine -> exec -> sweep -> cli; app.py and pages/ on top. Importing the package, config, data or
store costs no torch; roofseg.model installs the torchvision guard before timm/smp load.

OpenMP's wait policy is left as the environment sets it. On a quiet 2-core machine libgomp's
default (threads spin a while before sleeping) made a 2-thread epoch 20% faster than
OMP_WAIT_POLICY=PASSIVE; on a machine whose cores other processes want, spinning made it 2.3x
slower than 1 thread, where PASSIVE kept it on par (bench/threads.py, BENCHMARKS.md). On a shared
machine, export OMP_WAIT_POLICY=PASSIVE or set num_threads=1.
"""
__version__ = "0.2.0"
