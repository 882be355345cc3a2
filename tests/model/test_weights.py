"""Tests for roofseg.model.weights: a fake Hugging Face hub on 127.0.0.1 and local weight files."""
import hashlib
import http.server
import json
import socket
import threading
import time

import pytest
import torch

import roofseg.model  # noqa: F401  (the torchvision guard runs before timm/smp import)
import safetensors.torch
import segmentation_models_pytorch as smp
import torchvision
from huggingface_hub import constants
from roofseg.model.weights import WeightsUnavailable, imagenet_state_dict, load_into_encoder, local_state_dict


@pytest.fixture(autouse=True)
def isolated_hub(tmp_path, monkeypatch):
    """Keep the real HF cache and any proxy or offline flag out of these tests."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def served_state():
    torch.manual_seed(0)
    return smp.encoders.get_encoder("resnet18", weights=None).state_dict()


@pytest.fixture
def fake_hub(served_state, tmp_path):
    """Answer HEAD/GET /{org}/{repo}/resolve/{revision}/{filename} the way hf_hub_download needs:
    X-Repo-Commit (the revision), ETag (content hash) and Content-Length."""
    weights_file = tmp_path / "served.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in served_state.items()}, str(weights_file))
    files = {"config.json": json.dumps({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}).encode(),
             "model.safetensors": weights_file.read_bytes()}
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, body: bool):
            requests.append((self.command, self.path))
            parts = self.path.split("/")  # "", org, repo, "resolve", revision, filename
            if len(parts) != 6 or parts[3] != "resolve" or parts[5] not in files:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return
            data = files[parts[5]]
            self.send_response(200)
            self.send_header("X-Repo-Commit", parts[4])
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self):
            self._answer(body=False)

        def do_GET(self):
            self._answer(body=True)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    hub = {"endpoint": f"http://127.0.0.1:{server.server_address[1]}", "requests": requests, "server": server,
           "files": files}
    yield hub
    server.shutdown()
    server.server_close()


def test_download_then_cache_hit(fake_hub, served_state, tmp_path):
    cache = tmp_path / "hf-cache"
    got = imagenet_state_dict("resnet18", timeout=3, endpoint=fake_hub["endpoint"], cache_dir=cache)
    assert got.keys() == served_state.keys()
    assert all(torch.equal(got[k], served_state[k]) for k in got)
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    paths = {p for _, p in fake_hub["requests"]}
    assert paths == {f"/{settings['repo_id']}/resolve/{settings['revision']}/{f}" for f in ("config.json", "model.safetensors")}
    assert not (tmp_path / "default-cache").exists()  # only the cache we named was written

    fake_hub["server"].shutdown()  # offline from now on: the second call must come from the cache
    fake_hub["server"].server_close()
    t0 = time.monotonic()
    again = imagenet_state_dict("resnet18", timeout=3, endpoint=fake_hub["endpoint"], cache_dir=cache)
    assert time.monotonic() - t0 < 1
    assert torch.equal(again["conv1.weight"], served_state["conv1.weight"])


def test_default_cache_is_shared_with_smp(fake_hub, served_state, tmp_path):
    imagenet_state_dict("resnet18", timeout=3, endpoint=fake_hub["endpoint"])
    assert any((tmp_path / "default-cache").rglob("model.safetensors"))
    fake_hub["server"].shutdown()
    fake_hub["server"].server_close()
    # smp's own loader now finds both files in the cache and never touches the network
    encoder = smp.encoders.get_encoder("resnet18", weights="imagenet")
    assert torch.equal(encoder.conv1.weight, served_state["conv1.weight"])


def test_unreachable_hub_fails_fast(tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="resnet18 are not in the local cache and .* cannot be reached") as err:
        imagenet_state_dict("resnet18", timeout=2, endpoint=endpoint, cache_dir=tmp_path / "empty")
    assert time.monotonic() - t0 < 4
    assert "encoder weights 'none'" in str(err.value)


def test_stalled_probe_is_cut_off(tmp_path, monkeypatch):
    # a dead DNS resolver ignores socket timeouts; the probe's own deadline must end the wait
    monkeypatch.setattr("roofseg.model.weights.get_hf_file_metadata", lambda *a, **k: time.sleep(5))
    t0 = time.monotonic()
    with pytest.raises(WeightsUnavailable, match="did not answer within 0.5 s"):
        imagenet_state_dict("resnet18", timeout=0.5, endpoint=f"http://127.0.0.1:{closed_port()}", cache_dir=tmp_path)
    assert time.monotonic() - t0 < 3


def test_offline_flag_fails_without_network(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailable, match="HF_HUB_OFFLINE"):
        imagenet_state_dict("resnet18", endpoint=f"http://127.0.0.1:{closed_port()}", cache_dir=tmp_path)


def test_hub_error_is_reported(fake_hub, tmp_path):
    del fake_hub["files"]["model.safetensors"]  # the hub now answers 404 for the weights
    with pytest.raises(WeightsUnavailable, match=r"127\.0\.0\.1:\d+ answered HTTP 404 for http.*model\.safetensors"):
        imagenet_state_dict("resnet18", timeout=3, endpoint=fake_hub["endpoint"], cache_dir=tmp_path / "c")


def test_encoders_without_imagenet_weights():
    with pytest.raises(WeightsUnavailable, match="no ImageNet weights; it offers: ssl, swsl"):
        imagenet_state_dict("resnext101_32x4d")
    with pytest.raises(WeightsUnavailable, match="smp-native encoder"):
        imagenet_state_dict("tu-resnet18")
    with pytest.raises(WeightsUnavailable, match="Unknown encoder"):
        imagenet_state_dict("no-such-encoder")


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("tv") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def test_torchvision_file_loads_into_smp_encoder(torchvision_file):
    sd = local_state_dict(torchvision_file)
    encoder = smp.Unet("resnet18", encoder_weights=None).encoder
    report = load_into_encoder(encoder, sd, str(torchvision_file))
    assert report["loaded"] == len(encoder.state_dict())  # every encoder tensor came from the file
    assert report["missing"] == [] and report["mismatched"] == []
    assert set(report["unexpected"]) == {"fc.weight", "fc.bias"}  # smp's ResNet encoder deletes fc
    assert torch.equal(encoder.conv1.weight, sd["conv1.weight"])


def test_wrappers_are_unwrapped(torchvision_file, tmp_path):
    sd = torch.load(torchvision_file, weights_only=True)
    model = smp.Unet("resnet18", encoder_weights=None)
    wrapped = {
        "lightning.ckpt": {"state_dict": sd, "epoch": 3},
        "timm.pth": {"model": sd},
        "dp.pth": {f"module.{k}": v for k, v in sd.items()},
        "roofseg.pt": {"config": {"encoder": "resnet18", "lr": 1e-3}, "state_dict": model.state_dict()},
    }
    for name, obj in wrapped.items():
        torch.save(obj, tmp_path / name)
        got = local_state_dict(tmp_path / name)
        assert "conv1.weight" in got, name
    assert local_state_dict(tmp_path / "roofseg.pt").keys() == model.encoder.state_dict().keys()
    st = tmp_path / "enc.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    assert torch.equal(local_state_dict(st)["conv1.weight"], sd["conv1.weight"])


def test_unrelated_and_broken_files(torchvision_file, tmp_path):
    encoder = smp.encoders.get_encoder("resnet18", weights=None)
    with pytest.raises(WeightsUnavailable, match="random.pt has no tensors matching encoder ResNetEncoder"):
        load_into_encoder(encoder, {"foo.weight": torch.zeros(3), "conv1.weight": torch.zeros(2)}, "random.pt")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(torchvision_file.read_bytes()[:5000])
    with pytest.raises(WeightsUnavailable, match=f"{broken} could not be read"):
        local_state_dict(broken)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(WeightsUnavailable, match="bad.safetensors could not be read"):
        local_state_dict(bad_st)
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        local_state_dict(tmp_path / "missing.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WeightsUnavailable, match="holds a list, not a state dict"):
        local_state_dict(tmp_path / "list.pth")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled_module.pth")
    with pytest.raises(WeightsUnavailable, match="pickled_module.pth could not be read.*refused for safety"):
        local_state_dict(tmp_path / "pickled_module.pth")
