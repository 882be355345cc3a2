"""Model layer: smp model/loss/optimizer/schedule factories, encoder weights, metrics, checkpoints (torch).

The torchvision guard runs first, before anything here imports timm or smp.
"""
from roofseg.model import tvguard  # noqa: F401  (must run before anything imports timm or smp)
