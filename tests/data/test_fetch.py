"""Tests for roofseg.data.fetch: safe zip extraction and the DIDA download, against 127.0.0.1 only."""
import http.server
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

import roofseg.model  # noqa: F401  (the torchvision guard runs before timm/smp import)
from roofseg.data.fetch import FetchError, extract_dataset_zip, fetch_dida
from fakes import make_zip

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32  # content is never decoded here


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """A proxy from the environment would take our 127.0.0.1 requests elsewhere."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def dataset_entries(prefix="a/b/") -> dict[str, bytes]:
    return {
        f"{prefix}images/1.png": PNG,
        f"{prefix}images/2.JPG": PNG,
        f"{prefix}images/notes.txt": b"junk",
        f"{prefix}images/deeper/3.png": PNG,  # not directly under images/: ignored
        f"{prefix}images/.hidden.png": PNG,
        f"{prefix}labels/1.png": PNG,
        f"{prefix}labels/2.png": PNG,
        f"__MACOSX/{prefix}images/._1.png": PNG,
        f"{prefix}README.md": b"hello",
        "other/photo.png": PNG,
    }


def all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_nested_layout_is_flattened(tmp_path):
    dest = extract_dataset_zip(make_zip(dataset_entries()), tmp_path / "ds")
    assert dest == tmp_path / "ds"
    assert all_files(tmp_path) == {"ds/images/1.png", "ds/images/2.JPG", "ds/labels/1.png", "ds/labels/2.png"}
    assert (dest / "images" / "1.png").read_bytes() == PNG


def test_path_and_file_object_sources(tmp_path):
    zpath = tmp_path / "up.zip"
    zpath.write_bytes(make_zip(dataset_entries("")))
    extract_dataset_zip(zpath, tmp_path / "from_path")
    with zpath.open("rb") as f:
        extract_dataset_zip(f, tmp_path / "from_file")
    for d in ("from_path", "from_file"):
        assert sorted(p.name for p in (tmp_path / d / "images").iterdir()) == ["1.png", "2.JPG"]


def test_labels_optional_and_labelled_root_preferred(tmp_path):
    extract_dataset_zip(make_zip({"x/images/1.png": PNG}), tmp_path / "unlabelled")
    assert all_files(tmp_path / "unlabelled") == {"images/1.png"}
    # test/ has more images but no labels; train/ is the training set
    entries = {f"d/test/images/{i}.png": PNG for i in range(5)}
    entries |= {"d/train/images/1.png": PNG, "d/train/labels/1.png": PNG}
    extract_dataset_zip(make_zip(entries), tmp_path / "both")
    assert all_files(tmp_path / "both") == {"images/1.png", "labels/1.png"}


def test_unsafe_entries_never_escape(tmp_path):
    abs_dir = f"/tmp/roofseg-evil-{uuid.uuid4().hex}"
    entries = {
        "ds/images/ok.png": PNG,
        "../evil.png": PNG,
        "ds/images/../../../evil2.png": PNG,
        f"{abs_dir}/evil.png": PNG,
        "C:/images/evil3.png": PNG,
        "ds/images/..\\..\\evil4.png": PNG,
    }
    zbytes = make_zip(entries, symlinks={"ds/images/link.png": "/etc/passwd"})
    extract_dataset_zip(zbytes, tmp_path / "sub" / "ds")
    assert all_files(tmp_path) == {"sub/ds/images/ok.png"}
    assert not Path(abs_dir).exists()
    assert not (tmp_path.parent / "evil.png").exists()


def test_unsafe_entries_are_not_even_candidates(tmp_path):
    # each entry would be a valid images/ folder if its path were trusted
    abs_dir = f"/tmp/roofseg-evil-{uuid.uuid4().hex}"
    entries = {"../images/a.png": PNG, f"{abs_dir}/images/b.png": PNG, "C:/images/c.png": PNG}
    zbytes = make_zip(entries, symlinks={"images/link.png": "/etc/passwd"})
    with pytest.raises(FetchError, match="no images/ folder"):
        extract_dataset_zip(zbytes, tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []


def test_zip_bomb_refused_and_nothing_left(tmp_path):
    bomb = make_zip({"ds/images/big.png": b"\0" * (8 * 2**20)})
    assert len(bomb) < 100_000
    with pytest.raises(FetchError, match="limit of 1.0 MiB"):
        extract_dataset_zip(bomb, tmp_path / "ds", max_bytes=2**20)
    with pytest.raises(FetchError, match="limit of 3"):
        extract_dataset_zip(make_zip(dataset_entries()), tmp_path / "ds", max_files=3)
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not a zip")
    with pytest.raises(FetchError, match="junk.zip is not a zip file"):
        extract_dataset_zip(junk, tmp_path / "ds")
    with pytest.raises(FetchError, match="not a zip file"):
        extract_dataset_zip(b"nope", tmp_path / "ds")
    with pytest.raises(FetchError, match="no images/ folder.*2 image files.*Expected layout"):
        extract_dataset_zip(make_zip({"pics/1.png": PNG, "pics/2.png": PNG}), tmp_path / "ds")
    with pytest.raises(FetchError, match="does not exist"):
        extract_dataset_zip(tmp_path / "missing.zip", tmp_path / "ds")
    assert all_files(tmp_path) == {"junk.zip"}


def test_never_overwrites_existing_folder(tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "precious.txt").write_text("keep")
    with pytest.raises(FetchError, match="mine already exists and is not empty"):
        extract_dataset_zip(make_zip(dataset_entries()), dest)
    assert all_files(tmp_path) == {"mine/precious.txt"}
    empty = tmp_path / "empty"
    empty.mkdir()
    extract_dataset_zip(make_zip(dataset_entries()), empty)  # an empty folder is fine
    assert (empty / "images" / "1.png").is_file()


@pytest.fixture
def zip_server():
    """Serve /dida.zip from memory on 127.0.0.1; every other path is a 404."""
    payload = make_zip(dataset_entries("dida_test_task/train/"))
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path == "/page":  # a 200 that is not a zip
                self.send_response(200)
                self.send_header("Content-Length", "5")
                self.end_headers()
                self.wfile.write(b"hello")
                return
            if self.path != "/dida.zip":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def test_fetch_downloads_and_extracts(tmp_path, zip_server):
    base, hits = zip_server
    dest = fetch_dida(tmp_path / "data" / "dida", url=f"{base}/dida.zip", timeout=5)
    assert dest == tmp_path / "data" / "dida"
    assert all_files(tmp_path) == {f"data/dida/{f}" for f in ("images/1.png", "images/2.JPG", "labels/1.png", "labels/2.png")}
    # second call finds the dataset and does not download again
    assert fetch_dida(dest, url=f"{base}/dida.zip") == dest
    assert hits == ["/dida.zip"]


def test_fetch_non_zip_names_the_url(tmp_path, zip_server):
    base, _ = zip_server
    with pytest.raises(FetchError, match=r"archive downloaded from http://127\.0\.0\.1:\d+/page is not a zip"):
        fetch_dida(tmp_path / "dida", url=f"{base}/page", timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_fetch_http_error(tmp_path, zip_server):
    base, _ = zip_server
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_dida(tmp_path / "dida", url=f"{base}/missing.zip", timeout=5)
    assert list(tmp_path.iterdir()) == []  # the temp download is gone


def test_fetch_refused_connection_is_fast(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="Could not download the DIDA archive.*looks offline") as err:
        fetch_dida(tmp_path / "dida", url=f"http://127.0.0.1:{port}/dida.zip", timeout=3)
    assert time.monotonic() - t0 < 5
    assert "Traceback" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_fetch_refuses_nonempty_dest_before_downloading(tmp_path, zip_server):
    base, hits = zip_server
    (tmp_path / "dida").mkdir()
    (tmp_path / "dida" / "x.txt").write_text("mine")
    with pytest.raises(FetchError, match="not empty"):
        fetch_dida(tmp_path / "dida", url=f"{base}/dida.zip")
    assert hits == []


def test_fetch_stalled_name_lookup_is_bounded(tmp_path, monkeypatch):
    # a dead DNS resolver: getaddrinfo ignores socket timeouts, so fetch must not wait on it
    monkeypatch.setattr("roofseg.data.fetch.socket.getaddrinfo", lambda *a, **k: time.sleep(3))
    monkeypatch.setattr("roofseg.data.fetch.urllib.request.getproxies", dict)
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="took longer than 0.5 s"):
        fetch_dida(tmp_path / "dida", url="http://127.0.0.1:9/dida.zip", timeout=0.5)
    assert time.monotonic() - t0 < 2
