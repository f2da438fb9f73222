"""Uploaded frame sequences (explorer.training.images): accepted kinds and every refusal,
with the size checks made before anything large is decoded."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from explorer.core.errors import ParameterError
from explorer.training.data import DataError
from explorer.training.images import FrameDataError, frames_from_upload, load_frames


def _frames(T=12, H=16, W=20, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((T, H, W)).astype(np.float32)


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _png(a: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(a)
    if mode:
        img = img.convert(mode)
    img.save(buf, format="PNG")
    return buf.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _refused(content: bytes, filename: str, match: str, **kw) -> str:
    with pytest.raises(FrameDataError, match=match) as e:
        load_frames(content, filename=filename, **kw)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(filename.split("/")[-1]), msg
    return msg


# ----------------------------------------------------------------------------- accepted
def test_npy_float_frames_are_kept(tmp_path):
    a = _frames()
    np.testing.assert_array_equal(load_frames(_npy(a), filename="frames.npy"), a)
    p = tmp_path / "clip.npy"
    p.write_bytes(_npy(a))
    out = load_frames(p)
    assert out.dtype == np.float32 and out.shape == (12, 16, 20)
    np.testing.assert_array_equal(out, a)


def test_npy_trailing_channel_uint8_bool_and_rescaling():
    a = (_frames() * 255).astype(np.uint8)
    out = load_frames(_npy(a[..., None]), filename="c.npy")                # (T, H, W, 1)
    assert out.shape == (12, 16, 20)
    np.testing.assert_allclose(out, a / 255.0, rtol=0, atol=1e-7)
    b = load_frames(_npy(a > 128), filename="b.npy")
    assert set(np.unique(b)) <= {0.0, 1.0}
    wide = _frames().astype(np.float64) * 40.0 - 7.0                      # outside [0, 1]
    r = load_frames(_npy(wide), filename="w.npy")
    assert r.min() == 0.0 and r.max() == 1.0
    np.testing.assert_allclose(r, (wide - wide.min()) / (wide.max() - wide.min()), atol=1e-6)
    fortran = np.asfortranarray(_frames())
    np.testing.assert_array_equal(load_frames(_npy(fortran), filename="f.npy"), fortran)


def test_npz_single_or_named_frames():
    a = _frames()
    np.testing.assert_array_equal(load_frames(_npz(clip=a), filename="one.npz"), a)
    np.testing.assert_array_equal(load_frames(_npz(frames=a, labels=np.arange(12)),
                                              filename="named.npz"), a)


def test_zip_of_pngs_sorted_by_name_and_gray():
    a = (_frames(T=10) * 255).astype(np.uint8)
    files = {f"clip/frame{i}.png": _png(a[i]) for i in range(10)}       # frame10 sorts last
    files["__MACOSX/._frame1.png"] = b"junk"
    files["clip/.DS_Store"] = b"junk"
    out = load_frames(_zip(files), filename="clip.zip")
    assert out.shape == (10, 16, 20)
    np.testing.assert_allclose(out, a / 255.0, atol=1e-7)
    rgb = np.stack([a[0], a[1], a[2]], -1)                               # (H, W, 3)
    colour = _zip({f"{i:03d}.png": _png(rgb) for i in range(8)})
    gray = load_frames(colour, filename="rgb.zip")
    want = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32) / 255
    np.testing.assert_allclose(gray[3], want, atol=1e-7)


def test_frames_from_upload_makes_a_frameset():
    a = _frames()
    fs = frames_from_upload(_npy(a), "movie.npy", dt=0.1)
    assert fs.scene == "upload" and fs.states is None and fs.positions is None
    assert fs.frames.dtype == torch.float32 and fs.size == (16, 20) and fs.length == 12
    assert fs.settings == {"filename": "movie.npy", "dt": 0.1} and fs.dt == 0.1
    with pytest.raises(ParameterError, match="dt"):
        frames_from_upload(_npy(a), "movie.npy", dt=0.0)


# ----------------------------------------------------------------------------- refused
def test_pickled_object_arrays_are_refused():
    obj = np.empty((10, 8, 8), dtype=object)
    obj[:] = 1.0
    _refused(_npy(obj), "frames.npy", "pickled")
    _refused(_npz(frames=obj), "frames.npz", "pickled")


def test_wrong_shape_dtype_and_values():
    msg = _refused(_npy(np.zeros((10, 5))), "frames.npy", r"shape \(10, 5\) is not \(T, H, W\)")
    assert msg == "frames.npy: shape (10, 5) is not (T, H, W) or (T, H, W, 1)"
    _refused(_npy(np.zeros((10, 16, 16, 3))), "rgb.npy", "not \\(T, H, W\\)")
    _refused(_npy(np.zeros((10, 4, 16))), "tiny.npy", "8 to 128")
    _refused(_npy(np.zeros((10, 16, 200))), "wide.npy", "8 to 128")
    _refused(_npy(np.zeros((5, 16, 16))), "short.npy", "fewer than the 8")
    _refused(_npy(np.full((10, 8, 8), "a")), "text.npy", "not a real number")
    _refused(_npy(np.zeros((10, 8, 8), complex)), "complex.npy", "not a real number")
    bad = _frames()
    bad[3, 4, 5] = np.nan
    _refused(_npy(bad), "nan.npy", "frame 3, row 4, column 5")
    _refused(_npy(np.full((10, 8, 8), 7.0)), "flat.npy", "nothing moves")


def test_values_limit():
    _refused(_npy(_frames()), "frames.npy", "over the limit of 1,000", max_values=1_000)
    _refused(_npy(_frames()), "frames.npy", "over the limit", max_bytes=100)


def test_huge_header_shape_is_refused_from_the_header():
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 128, 128)})
    buf.write(b"\0" * 64)                                                 # a tiny file
    content = buf.getvalue()
    assert len(content) < 300
    _refused(content, "huge.npy", "16,384,000,000,000 values, over the limit")
    # the same header inside an NPZ
    _refused(_zip({"frames.npy": content}), "huge.npz", "over the limit")


def test_zip_bomb_member_is_refused_before_decompressing():
    """A member that would decompress to far more than the values allow (zeros compress
    1000:1) is refused from the ZIP directory; its NPY header alone would pass."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (8, 16, 16)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("frames.npy", "w") as f:
            f.write(header.getvalue())
            zeros = bytes(2**20)
            for _ in range(8):                                            # 8 MiB of zeros
                f.write(zeros)
    content = buf.getvalue()
    assert len(content) < 100_000
    _refused(content, "bomb.npz", "would decompress to 8.0 MiB", max_values=100_000)


def test_truncated_npy_and_garbage():
    good = _npy(_frames())
    _refused(good[: len(good) // 2], "cut.npy", "truncated")
    _refused(good[:20], "cut.npy", "not a valid NPY file")
    _refused(b"this is not an array at all" * 10, "junk.npy", "not an NPY, NPZ or ZIP")
    _refused(b"PK\x03\x04" + b"\0" * 100, "broken.zip", "could not be read")
    _refused(b"", "empty.npy", "not an NPY, NPZ or ZIP")


def test_png_zip_refusals():
    a = (_frames(T=10, H=16, W=16) * 255).astype(np.uint8)
    mixed = {f"f{i:02d}.png": _png(a[i]) for i in range(9)}
    mixed["f09.png"] = _png(np.zeros((16, 24), np.uint8))
    _refused(_zip(mixed), "mixed.zip", r"f09.png: 16x24 pixels \(height x width\), but the first frame is 16x16")
    few = {f"f{i}.png": _png(a[i]) for i in range(5)}
    _refused(_zip(few), "few.zip", "5 frames, fewer than the 8")
    other = {f"f{i}.png": _png(a[i]) for i in range(9)}
    other["notes.txt"] = b"hello"
    _refused(_zip(other), "other.zip", "notes.txt is not a PNG")
    fake = {f"f{i}.png": _png(a[i]) for i in range(9)}
    fake["f9.png"] = b"not a png"
    _refused(_zip(fake), "fake.zip", "f9.png: not a readable image")
    big = {f"f{i}.png": _png(np.zeros((200, 16), np.uint8)) for i in range(9)}
    _refused(_zip(big), "big.zip", "8 to 128")                   # from the PNG header
    _refused(_zip({}), "empty.zip", "no PNG files")


def _claim_size(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR chunk rewritten to claim another size (CRC fixed)."""
    import struct
    import zlib
    assert png[12:16] == b"IHDR"
    body = struct.pack(">II", width, height) + png[24:29]
    return png[:16] + body + struct.pack(">I", zlib.crc32(b"IHDR" + body)) + png[33:]


@pytest.mark.parametrize("w,h", [(200, 16), (100_000, 100_000), (16, 60_000)])
def test_png_header_size_is_checked_before_decoding(w, h):
    a = np.zeros((16, 16), np.uint8)
    files = {f"f{i}.png": _png(a) for i in range(8)}
    files["f0.png"] = _claim_size(files["f0.png"], w, h)    # the pixels do not match: never decoded
    msg = _refused(_zip(files), "liar.zip", "8 to 128|enormous")
    assert "decoded" not in msg


def test_refusals_are_data_errors():
    assert issubclass(FrameDataError, DataError)
    with pytest.raises(DataError):
        load_frames(b"nope", filename="x.npy")
    with pytest.raises(FrameDataError, match="no such file"):
        load_frames("/nonexistent/dir/frames.npy")
