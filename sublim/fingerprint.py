"""What identifies a model in a cache key: its content for a local path, its commit for a hub id.

A model rebuilt at the same path must get a new key, so local folders are hashed. Weight files
of many GB are hashed by size plus three 1 MiB windows (start, middle, end): enough to tell any
retrained or re-initialised model apart, without reading 15 GB for every job.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

FULL_HASH_LIMIT = 64 * 2**20
WINDOW = 2**20


def _file_digest(path: Path, h: "hashlib._Hash") -> None:
    size = path.stat().st_size
    h.update(f"{size}:".encode())
    with open(path, "rb") as f:
        if size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
            return
        for offset in (0, size // 2, size - WINDOW):
            f.seek(offset)
            h.update(f.read(WINDOW))


@functools.lru_cache(maxsize=64)
def _dir_fingerprint(path: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    root = Path(path)
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        if rel.startswith((".", "__pycache__")) or "/." in rel:
            continue
        h.update(rel.encode() + b"\0")
        _file_digest(p, h)
    return "sha256:" + h.hexdigest()[:24]


def local_fingerprint(path: str | Path) -> str:
    """Content hash of a local model/adapter folder (or file), memoised while unchanged."""
    p = Path(path).resolve()
    if p.is_file():
        h = hashlib.sha256()
        _file_digest(p, h)
        return "sha256:" + h.hexdigest()[:24]
    stamp = tuple(sorted((str(q), q.stat().st_mtime_ns, q.stat().st_size) for q in p.rglob("*") if q.is_file()))
    return _dir_fingerprint(str(p), stamp)


@functools.lru_cache(maxsize=64)
def hub_revision(repo_id: str, revision: str | None) -> str:
    """The commit a hub id resolves to: the local HF cache's ref, else the hub, else the name."""
    rev = revision or "main"
    if len(rev) == 40 and all(c in "0123456789abcdef" for c in rev):
        return rev
    from huggingface_hub.constants import HF_HUB_CACHE

    ref = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / rev
    if ref.is_file():
        return ref.read_text().strip()
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        try:
            from huggingface_hub import HfApi

            return HfApi().model_info(repo_id, revision=rev, timeout=10).sha or rev
        except Exception as e:  # offline, private, unknown: the key falls back to the name
            log.warning("could not resolve %s@%s to a commit (%s); keying on the name", repo_id, rev, e)
    return f"unresolved:{rev}"


def is_local_path(path: str, store_root: str | Path | None = None) -> bool:
    """Whether `path` names a local folder or file rather than a hub id (org/name).

    A path that exists, that starts with ./ ../ / or ~, or that is not of the form org/name is local.
    So is org/name when `org` is a folder under the working directory, or when the path lies in the
    artifact store (`store_root`): `artifacts/tiny-model` before the tiny model is built is a missing
    folder, not a hub model."""
    if os.path.exists(path) or path.startswith(("/", "./", "../", "~")) or path in (".", ".."):
        return True
    if path.count("/") != 1:
        return True
    if os.path.isdir(path.split("/", 1)[0]):
        return True
    if store_root is not None:
        root = Path(store_root).expanduser().resolve()
        target = Path(path).resolve()
        return target == root or root in target.parents
    return False


def model_fingerprint(path: str, revision: str | None = None, store_root: str | Path | None = None) -> str:
    """A local folder's content hash, or a hub id's commit (`store_root`: see is_local_path)."""
    if os.path.exists(path):
        return local_fingerprint(path)
    if is_local_path(path, store_root):
        raise FileNotFoundError(f"model path {path!r} does not exist (and is not a hub id like org/name)")
    return f"hub:{path}@{hub_revision(path, revision)}"
