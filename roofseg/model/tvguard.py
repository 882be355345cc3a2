"""Import guard for torchvision on a CPU-only torch (imported first by roofseg).

The registry's only torchvision for torch 2.13.0 is a CUDA build. With the CPU torch its import
fails with "operator torchvision::nms does not exist" because the compiled ops library cannot load,
and timm (hence smp) imports torchvision. smp needs none of torchvision's C++ ops, so defining the
two op schemas torchvision registers fake kernels for (``nms``, ``qnms``) is enough to import it.
Wherever torchvision imports normally this module does nothing.
"""
import sys

_MISSING_OP = "operator torchvision::nms does not exist"
patched = False  # True when the schemas had to be defined here (read by tests and env.json)
_lib = None  # keep the Library alive: dropping it would unregister the schemas


def _forget_torchvision() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def ensure_torchvision():
    """Import torchvision, defining the missing op schemas only on that exact failure."""
    global patched, _lib
    try:
        import torchvision
        return torchvision
    except RuntimeError as e:
        if _MISSING_OP not in str(e):
            raise
    import torch

    _forget_torchvision()
    _lib = torch.library.Library("torchvision", "DEF")
    _lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    patched = True
    import torchvision
    return torchvision


ensure_torchvision()
