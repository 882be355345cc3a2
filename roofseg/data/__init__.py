"""Data layer: image/label pairs, dataset checks, decoding, splits, the synthetic demo, the DIDA download, overlays.

Numpy and PIL only: nothing here imports torch.
"""
