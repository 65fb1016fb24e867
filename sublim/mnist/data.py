"""Train/test images as float tensors in [-1, 1]: sklearn's 8x8 digits or MNIST IDX files.

Pixels go to [-1, 1] because the students' noise is uniform on [-1, 1] and must cover the
input range (PROTOCOL.md). The IDX reader is a real parser (magic number, dimensions, dtype,
length) so a corrupt or truncated download fails here, naming the file, not as a shape error
in training.
"""
from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

IDX_UBYTE = 0x08
#: The four MNIST files; each may also be gzipped (.gz) or use '.' before idx (a common rename).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class IdxError(ValueError):
    """A file that is not a valid IDX file; the message names it."""


@dataclass
class Digits:
    x_train: np.ndarray  # [N, D] float32 in [-1, 1]
    y_train: np.ndarray  # [N] int64 in 0..9
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (plain, or gzipped when the name ends in .gz) of unsigned bytes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as e:  # BadGzipFile is an OSError; a cut gzip stream an EOFError
        raise IdxError(f"{path}: cannot decompress ({e})") from e
    if len(raw) < 4:
        raise IdxError(f"{path}: truncated, {len(raw)} bytes is shorter than the 4-byte magic number")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or ndim == 0:
        raise IdxError(f"{path}: bad magic number 0x{raw[:4].hex()} (want 0x0000 + dtype byte + ndim)")
    if dtype != IDX_UBYTE:
        raise IdxError(f"{path}: unsupported IDX dtype 0x{dtype:02x} (only 0x08 unsigned byte)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{path}: truncated header ({len(raw)} bytes, need {header} for {ndim} dims)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    want = int(np.prod(dims, dtype=np.int64))
    have = len(raw) - header
    if have != want:
        kind = "truncated" if have < want else "trailing bytes"
        raise IdxError(f"{path}: {kind}: dims {dims} need {want} data bytes, file has {have}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    alt = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", alt, alt + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: no {stem} or {stem}.gz (MNIST IDX files expected)")


def load_idx_folder(folder: str | Path) -> Digits:
    """The four MNIST IDX files in folder; images flattened and scaled to [-1, 1]."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST data folder not found: {folder}")
    paths = {k: _find(folder, v) for k, v in IDX_FILES.items()}
    arr = {k: read_idx(p) for k, p in paths.items()}
    out = {}
    for split in ("train", "test"):
        images, labels = arr[f"{split}_images"], arr[f"{split}_labels"]
        ip, lp = paths[f"{split}_images"], paths[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1:
            raise IdxError(f"{ip} / {lp}: want 3-d images and 1-d labels, got {images.shape} / {labels.shape}")
        if len(images) != len(labels):
            raise IdxError(f"{ip} has {len(images)} images but {lp} has {len(labels)} labels")
        if labels.max(initial=0) > 9:
            raise IdxError(f"{lp}: labels must be 0..9, found {int(labels.max())}")
        out[f"x_{split}"] = (images.reshape(len(images), -1).astype(np.float32) / 255.0) * 2 - 1
        out[f"y_{split}"] = labels.astype(np.int64)
    return Digits(**out, source=str(folder))


def load_sklearn_digits(test_fraction: float = 0.3, split_seed: int = 0) -> Digits:
    """sklearn's bundled 8x8 digits (1797 images, values 0..16), stratified split; no download."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x.astype(np.float32) / 16.0) * 2 - 1
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=split_seed)
    return Digits(xtr, ytr.astype(np.int64), xte, yte.astype(np.int64), source="sklearn-digits-8x8")


def load(data_path: Optional[str], test_fraction: float = 0.3, split_seed: int = 0) -> Digits:
    return load_sklearn_digits(test_fraction, split_seed) if data_path is None else load_idx_folder(data_path)
