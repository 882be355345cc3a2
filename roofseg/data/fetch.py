"""Get a roof dataset onto disk: download the DIDA archive, or unpack an uploaded zip safely.

Both paths end in `extract_dataset_zip`, which finds `images/` (and optional `labels/`) anywhere
in the archive and writes them flat to `dest/images/` and `dest/labels/`. Archives come from
users and the web, so extraction never trusts entry names, symlinks or declared sizes.
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import stat
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

DIDA_URL = "https://dida.do/downloads/dida-test-task"
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
MAX_DOWNLOAD_BYTES = 2 * 2**30  # a stalled or endless response must not fill the disk
_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A dataset could not be downloaded or unpacked; the message says what to do next."""


def fetch_dida(dest, url: str = DIDA_URL, timeout: float = 10.0) -> Path:
    """Download the DIDA zip from `url` and unpack it into `dest`; return the dataset folder.

    `dest` already holding `images/` means it was fetched before: it is returned untouched.
    `timeout` (seconds) bounds name lookup, connecting and every read, so an offline machine
    fails fast with a FetchError instead of hanging.
    """
    dest = Path(dest)
    if (dest / "images").is_dir():
        return dest
    _check_dest_free(dest)  # before downloading, so a bad folder choice costs nothing
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}-", suffix=".zip")
    try:
        with os.fdopen(fd, "wb") as tmp:
            content_type = _download(url, tmp, timeout)
        try:
            return extract_dataset_zip(tmp_name, dest)
        except FetchError as e:
            if "text/html" in content_type:
                raise FetchError(
                    f"{url} returned a web page, not the zip archive. Download the archive in a "
                    "browser and upload it, or use the built-in demo dataset."
                ) from None
            # the temp file's name means nothing to the user; name the download instead
            raise FetchError(str(e).replace(tmp_name, f"The archive downloaded from {url}")) from None
    finally:
        os.unlink(tmp_name)


def _copy_capped(src, dst, written: int, limit: int, too_big) -> int:
    """Copy src to dst in chunks, counting real bytes on top of `written`; past `limit`, raise
    FetchError(too_big()) before writing the chunk. Returns the new count."""
    while chunk := src.read(_CHUNK):
        written += len(chunk)
        if written > limit:
            raise FetchError(too_big())
        dst.write(chunk)
    return written


def _download(url: str, out, timeout: float) -> str:
    """Stream `url` into the open binary file `out`; return the response's Content-Type."""
    offline_hint = (
        "This machine looks offline; download it elsewhere and point roofseg at the folder, "
        "or use the built-in demo dataset."
    )
    host = urllib.parse.urlsplit(url).hostname
    problem = _lookup_problem(url, host, timeout) if host else None
    if problem:
        raise FetchError(f"Could not download the DIDA archive from {url}: {problem}. {offline_hint}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            _copy_capped(resp, out, 0, MAX_DOWNLOAD_BYTES, lambda: (
                f"{url} sent more than {MAX_DOWNLOAD_BYTES // 2**20} MiB; that is not the "
                "DIDA archive. Download it by hand and upload it instead."))
            return resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        raise FetchError(
            f"Could not download the DIDA archive from {url}: the server answered HTTP "
            f"{e.code} {e.reason}. Check the address, or download the archive by hand."
        ) from None
    except urllib.error.URLError as e:
        raise FetchError(f"Could not download the DIDA archive from {url}: {e.reason}. {offline_hint}") from None
    except (TimeoutError, OSError) as e:  # read timeouts and resets surface as bare OSErrors
        raise FetchError(f"Could not download the DIDA archive from {url}: {e}. {offline_hint}") from None


def _lookup_problem(url: str, host: str, timeout: float) -> str | None:
    """Why `host` cannot be resolved within `timeout` s, or None if it can. getaddrinfo
    ignores socket timeouts and a dead resolver can stall it far longer, hence the thread."""
    if urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme):
        return None  # the proxy resolves the name, not us
    result: list[str | None] = []

    def lookup():
        try:
            socket.getaddrinfo(host, None)
            result.append(None)
        except OSError as e:
            result.append(f"the name {host} could not be resolved ({e})")

    t = threading.Thread(target=lookup, daemon=True)
    t.start()
    t.join(timeout)
    return result[0] if result else f"looking up the name {host} took longer than {timeout:g} s"


def extract_dataset_zip(src, dest, max_bytes: int = 512 * 2**20, max_files: int = 20000) -> Path:
    """Unpack the `images/` and `labels/` folders of a zip into `dest/images/`, `dest/labels/`.

    `src` is a path, the zip's bytes, or a binary file object. The folders may sit at any depth
    (`a/b/images/x.png`); only image files directly inside them are kept, by basename. Labels
    are optional (prediction-only data). If several `images/` folders exist, the one with a
    sibling `labels/` and the most images wins. Limits: `max_bytes` uncompressed, `max_files`
    entries. `dest` must not exist or be empty; on failure nothing is left behind.
    """
    dest = Path(dest)
    _check_dest_free(dest)
    name, fileobj = _open_source(src)
    try:
        zf = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, EOFError):
        raise FetchError(f"{name} is not a zip file. Upload a .zip holding images/ and labels/ folders.") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_files:
            raise FetchError(f"{name} has {len(infos)} entries, more than the limit of {max_files}; refusing to unpack it.")
        declared = sum(i.file_size for i in infos)
        if declared > max_bytes:
            raise FetchError(
                f"{name} would unpack to {declared / 2**20:.1f} MiB, more than the limit of "
                f"{max_bytes / 2**20:.1f} MiB; refusing to unpack it (possible zip bomb)."
            )
        members = _pick_members(name, infos)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Unpack next to dest and rename at the end, so a failure never leaves half a dataset.
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-partial-"))
        try:
            _write_members(zf, name, members, tmp, max_bytes)
            if dest.exists():
                dest.rmdir()  # known empty (checked above); rename cannot replace a folder everywhere
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def _check_dest_free(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FetchError(
            f"{dest} already exists and is not empty; roofseg never overwrites existing data. "
            "Choose a new folder name, or remove that folder yourself."
        )


def _open_source(src):
    """(display name, what zipfile.ZipFile accepts) for a path, bytes, or an open binary file."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return "The uploaded data", io.BytesIO(bytes(src))
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise FetchError(f"{path} does not exist or is not a file.")
        return str(path), str(path)  # ZipFile opens and closes the file itself
    return str(getattr(src, "name", "The uploaded file")), src


def _safe_parts(info: zipfile.ZipInfo) -> tuple[str, ...] | None:
    """The entry's path parts, or None for entries that must never be read: symlinks,
    absolute or drive paths, `..`, and macOS/dotfile clutter."""
    if stat.S_ISLNK(info.external_attr >> 16):
        return None
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = PurePosixPath(name).parts
    if not parts or any(p in ("..", "__MACOSX") or p.startswith(".") for p in parts):
        return None
    return parts


def _pick_members(name: str, infos) -> dict[str, list[zipfile.ZipInfo]]:
    """Choose one dataset root inside the zip; return {"images": [...], "labels": [...]}."""
    folders: dict[tuple[tuple[str, ...], str], list[zipfile.ZipInfo]] = {}
    loose_images = 0
    for info in infos:
        parts = _safe_parts(info)
        if info.is_dir() or parts is None or PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_EXTS:
            continue
        kind = parts[-2].lower() if len(parts) >= 2 else ""
        if kind in ("images", "labels"):
            folders.setdefault((parts[:-2], kind), []).append(info)
        else:
            loose_images += 1
    roots = [root for root, kind in folders if kind == "images"]
    if not roots:
        found = f" It has {loose_images} image files, but not inside an images/ folder." if loose_images else ""
        raise FetchError(
            f"{name} has no images/ folder.{found} Expected layout: <any folder>/images/*.png and, "
            "for training, <same folder>/labels/*.png with the same file names."
        )
    # Prefer labelled data, then the biggest set, then the shallowest, then a stable name order.
    root = min(roots, key=lambda r: (-((r, "labels") in folders), -len(folders[(r, "images")]), len(r), r))
    return {kind: folders.get((root, kind), []) for kind in ("images", "labels")}


def _write_members(zf: zipfile.ZipFile, name: str, members, out: Path, max_bytes: int) -> None:
    """Copy members to out/<kind>/<basename>, counting real bytes since headers can lie."""
    written = 0
    for kind, infos in members.items():
        if not infos:
            continue
        folder = out / kind
        folder.mkdir()
        seen: set[str] = set()
        for info in infos:
            base = PurePosixPath(info.filename.replace("\\", "/")).name
            if base in seen:  # a repeated entry name: keep the first, never overwrite
                continue
            seen.add(base)
            try:
                with zf.open(info) as src, open(folder / base, "xb") as dst:
                    written = _copy_capped(src, dst, written, max_bytes, lambda: (
                        f"{name} unpacks to more than the limit of {max_bytes / 2**20:.1f} MiB "
                        "(its size header is wrong); refusing to unpack it (possible zip bomb)."))
            except FetchError:
                raise
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as e:
                # bad CRC, unknown compression, encrypted entry, truncated data
                raise FetchError(f"{name} is damaged or unsupported ({info.filename}: {e}).") from None
