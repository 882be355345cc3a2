"""roofseg: small-data roof segmentation experiments (library; never imports streamlit).

The torchvision guard is imported first so that timm/smp import on a CPU-only torch.
"""
from . import _tvguard  # noqa: F401  (must run before anything imports timm or smp)

__version__ = "0.1.0"
