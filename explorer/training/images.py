"""Uploaded image sequences (frames), validated before anything large is decoded.

The file formats and what is checked before decoding (so that a small malicious file cannot
make the server allocate gigabytes):

* ``.npy`` of shape (T, H, W) or (T, H, W, 1): the header (magic, dtype, shape) is read
  alone; object (pickled) arrays, non-numeric dtypes and over-limit shapes are refused, and
  the data must be as long as the header promises (``allow_pickle`` is never on).
* ``.npz`` holding exactly one such array (or one named ``frames``): the member's
  uncompressed size is read from the ZIP directory and refused when over the limit (ZIP
  bombs), then its NPY header is checked as above, and only the promised bytes are read.
* ``.zip`` of PNG files, one frame each, sorted by name (numbers by value, ``frame2``
  before ``frame10``): the number of entries and each entry's uncompressed size are checked
  from the ZIP directory, and each PNG's width and height from its header (Pillow reads it
  lazily) before its pixels are decoded. Colour frames become grayscale (ITU-R 601 luma).

The kind is recognised from the content (NPY magic, ZIP), not trusted from the name.
Frames come back as float32 in [0, 1]: uint8 divided by 255, bool as 0/1, other numbers
(finite, else refused naming the first bad frame, row and column) kept when inside [0, 1] and
rescaled from their min/max otherwise. Every refusal is a :class:`FrameDataError` with one
line that names the file and the problem.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
import zipfile
import zlib

import numpy as np
import torch

from ..core.errors import ParameterError
from ..core.render import FrameSet
from .data import MAX_FILE_BYTES, MAX_VALUES, DataError, npz_member, read_npy

#: frame height and width in pixels: inclusive range
MIN_SIDE, MAX_SIDE = 8, 128
#: fewest frames accepted
MIN_FRAMES = 8
#: most PNG files in one ZIP
MAX_ENTRIES = 20_000
#: largest uncompressed PNG file (one frame of at most 128 x 128 pixels, with metadata)
MAX_PNG_BYTES = 4 * 2**20
#: room for an NPY header inside an NPZ member


class FrameDataError(DataError):
    """Uploaded frames are malformed, of an unsupported kind, or over a limit."""


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# ----------------------------------------------------------------------------- checks
def _check_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.hasobject:
        raise FrameDataError(f"{name}: holds Python objects (a pickled array); only numeric "
                             "arrays are accepted")
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.itemsize > 8:
        raise FrameDataError(f"{name}: dtype {dtype} is not a real number type "
                             "(use uint8, float32 or float64)")


def _check_shape(shape: tuple[int, ...], name: str, max_values: int) -> tuple[int, int, int]:
    """(T, H, W) from a (T, H, W) or (T, H, W, 1) shape within the limits."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise FrameDataError(f"{name}: shape {shape} is not (T, H, W) or (T, H, W, 1)")
    T, H, W = shape
    if not (MIN_SIDE <= H <= MAX_SIDE and MIN_SIDE <= W <= MAX_SIDE):
        raise FrameDataError(f"{name}: frames of {H}x{W} pixels (height x width); both must be "
                             f"from {MIN_SIDE} to {MAX_SIDE}")
    if T * H * W > max_values:
        raise FrameDataError(f"{name}: {T:,} frames of {H}x{W} pixels are {T * H * W:,} values, "
                             f"over the limit of {max_values:,}")
    if T < MIN_FRAMES:
        raise FrameDataError(f"{name}: {T} frames, fewer than the {MIN_FRAMES} needed")
    return T, H, W


def _as_unit(a: np.ndarray, name: str) -> np.ndarray:
    """Numbers -> float32 in [0, 1] (uint8 / 255, bool 0/1, others kept or min/max-rescaled)."""
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return (a.astype(np.float32) / np.float32(255.0))
    a = a.astype(np.float64, copy=False)
    bad = ~np.isfinite(a)
    if bad.any():
        t, r, c = (int(i) for i in np.argwhere(bad)[0])
        raise FrameDataError(f"{name}: {int(bad.sum()):,} NaN or inf value(s); the first at "
                             f"frame {t}, row {r}, column {c}")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        if hi == lo:
            raise FrameDataError(f"{name}: every pixel of every frame is {lo:g}: nothing moves")
        a = (a - lo) / (hi - lo)
    return a.astype(np.float32)


# ----------------------------------------------------------------------------- NPY / NPZ
def _frames_check(name: str, max_values: int):
    def check(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
        _check_dtype(dtype, name)
        return _check_shape(shape, name, max_values)
    return check


def _read_npy(fp, name: str, max_values: int) -> np.ndarray:
    """An NPY stream -> (T, H, W) array in its own dtype (header checked first)."""
    return read_npy(fp, name, _frames_check(name, max_values), error=FrameDataError)


def _read_npz(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], name: str,
              max_values: int) -> np.ndarray:
    info = npz_member(zf, members, "frames", name, max_values, error=FrameDataError,
                      size_error=FrameDataError)
    with zf.open(info) as fp:
        return _read_npy(fp, f"{name}:{info.filename}", max_values)


# ----------------------------------------------------------------------------- PNG ZIP
def _natural(s: str) -> list:
    """Sort key: digit runs compare as numbers (``frame2`` before ``frame10``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _junk(info: zipfile.ZipInfo) -> bool:
    """Directories and the files archivers add (``__MACOSX/``, ``.DS_Store``, dot files)."""
    base = info.filename.rstrip("/").rsplit("/", 1)[-1]
    return info.is_dir() or info.filename.startswith("__MACOSX/") or base.startswith(".")


def _png_gray(img) -> np.ndarray:
    """A decoded PIL image -> (H, W) float32 in [0, 1]."""
    if img.mode == "1":
        return np.asarray(img, dtype=np.float32)
    if img.mode.startswith("I"):                                      # 16-bit grayscale
        return np.clip(np.asarray(img, dtype=np.float64) / 65535.0, 0.0, 1.0).astype(np.float32)
    if img.mode == "F":
        return np.asarray(img, dtype=np.float32)
    return np.asarray(img.convert("L"), dtype=np.float32) / np.float32(255.0)


def _read_png_zip(zf: zipfile.ZipFile, entries: list[zipfile.ZipInfo], name: str,
                  max_values: int, max_bytes: int) -> np.ndarray:
    from PIL import Image

    if not entries:
        raise FrameDataError(f"{name}: the ZIP holds no PNG files")
    others = [e for e in entries if not e.filename.lower().endswith(".png")]
    if others:
        raise FrameDataError(f"{name}: {others[0].filename} is not a PNG file; the ZIP must hold "
                             "PNG frames only")
    if len(entries) > MAX_ENTRIES:
        raise FrameDataError(f"{name}: {len(entries):,} files, over the limit of {MAX_ENTRIES:,} frames")
    if len(entries) < MIN_FRAMES:
        raise FrameDataError(f"{name}: {len(entries)} frames, fewer than the {MIN_FRAMES} needed")
    for e in entries:
        if e.file_size > MAX_PNG_BYTES:
            raise FrameDataError(f"{name}: {e.filename} would decompress to {_mib(e.file_size)}, "
                                 f"over the limit of {_mib(MAX_PNG_BYTES)} for one frame")
    total = sum(e.file_size for e in entries)
    if total > max_bytes:
        raise FrameDataError(f"{name}: the PNG files would decompress to {_mib(total)}, over "
                             f"the limit of {_mib(max_bytes)}")
    entries = sorted(entries, key=lambda e: _natural(e.filename))
    frames: list[np.ndarray] = []
    first: tuple[int, int] | None = None
    for e in entries:
        where = f"{name}:{e.filename}"
        with zf.open(e) as fp:
            data = fp.read(MAX_PNG_BYTES + 1)
        try:
            with warnings.catch_warnings():                           # we check the size below
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))                    # reads the header only
        except Image.DecompressionBombError:
            raise FrameDataError(f"{where}: the PNG header claims an enormous image; frames must "
                                 f"be {MIN_SIDE} to {MAX_SIDE} pixels wide and high") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise FrameDataError(f"{where}: not a readable image ({err})") from None
        if img.format != "PNG":
            raise FrameDataError(f"{where}: a {img.format or 'unknown'} image, not a PNG")
        W, H = img.size
        if first is None:
            _check_shape((len(entries), H, W), where, max_values)
            first = (H, W)
        elif (H, W) != first:
            raise FrameDataError(f"{where}: {H}x{W} pixels (height x width), but the first frame "
                                 f"is {first[0]}x{first[1]}; all frames must have one size")
        try:
            img.load()
        except (OSError, SyntaxError, ValueError, zlib.error) as err:
            raise FrameDataError(f"{where}: the PNG could not be decoded ({err})") from None
        frames.append(_png_gray(img))
    return np.stack(frames)                                           # (T, H, W)


# ----------------------------------------------------------------------------- entry points
def _content(source, filename: str | None, max_bytes: int) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = os.path.basename(filename) if filename else "upload"
        if len(source) > max_bytes:
            raise FrameDataError(f"{name}: {_mib(len(source))}, over the limit of {_mib(max_bytes)}")
        return bytes(source), name
    try:
        p = os.fspath(source)
    except TypeError:
        raise FrameDataError(f"frames must come from a file path or bytes, got "
                             f"{type(source).__name__}") from None
    name = os.path.basename(filename or p)
    if not os.path.isfile(p):
        raise FrameDataError(f"{name}: no such file")
    size = os.path.getsize(p)
    if size > max_bytes:
        raise FrameDataError(f"{name}: {_mib(size)}, over the limit of {_mib(max_bytes)}")
    with open(p, "rb") as f:
        return f.read(max_bytes + 1), name


def load_frames(source, *, filename: str | None = None, max_bytes: int = MAX_FILE_BYTES,
                max_values: int = MAX_VALUES) -> np.ndarray:
    """Read an image sequence: NPY, NPZ or a ZIP of PNG files (see the module docstring).

    Args:
        source: a path, or the file's bytes.
        filename: the name shown in messages (default the path's base name, or ``"upload"``).
        max_bytes: largest file accepted (and largest total of a ZIP's PNG files).
        max_values: most pixel values ``T * H * W``.

    Returns:
        (T, H, W) float32 in [0, 1], ``8 <= H, W <= 128``, ``T >= 8``.

    Raises:
        FrameDataError: one line naming the file and the problem.
    """
    content, name = _content(source, filename, max_bytes)
    try:
        if content[:6] == b"\x93NUMPY":
            a = _read_npy(io.BytesIO(content), name, max_values)
        elif content[:4] == b"PK\x03\x04" or zipfile.is_zipfile(io.BytesIO(content)):
            with zipfile.ZipFile(io.BytesIO(content)) as zf:
                entries = [i for i in zf.infolist() if not _junk(i)]
                if entries and all(i.filename.lower().endswith(".npy") for i in entries):
                    a = _read_npz(zf, entries, name, max_values)
                else:
                    a = _read_png_zip(zf, entries, name, max_values, max_bytes)
        else:
            raise FrameDataError(f"{name}: not an NPY, NPZ or ZIP file (frames are accepted as "
                                 ".npy, .npz or a .zip of PNG files)")
    except FrameDataError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError,
            NotImplementedError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FrameDataError(f"{name}: could not be read ({msg})") from None
    return _as_unit(a, name)


def frames_from_upload(content: bytes, filename: str, *, dt: float = 1.0) -> FrameSet:
    """An uploaded file's frames as a :class:`~explorer.core.render.FrameSet` (scene
    ``"upload"``, no states or positions; ``settings`` holds the file name and ``dt``)."""
    try:
        dt = float(dt)
    except (TypeError, ValueError):
        raise ParameterError(f"dt must be a positive number, got {dt!r}") from None
    if not (math.isfinite(dt) and dt > 0):
        raise ParameterError(f"dt must be a positive number, got {dt!r}")
    a = load_frames(content, filename=filename)
    return FrameSet(frames=torch.from_numpy(np.ascontiguousarray(a)), states=None, dt=dt,
                    variables=(), scene="upload",
                    settings={"filename": os.path.basename(filename), "dt": dt}, positions=None)
