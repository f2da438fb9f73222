"""Where a parameter map's tiles go as they finish: memory (the page) or a Zarr store (the CLI).

A Zarr map store is an xarray Dataset written with ``to_zarr``: the quantity as a data
variable over the axes' coordinates (with ``long_name`` and ``units``), the map's settings as
the attribute ``explorer_map`` (the JSON record of :meth:`MapSpec.settings`, which a resume
must match), and a ``done`` flag per tile. The quantity's Zarr chunks are the tiles and
``done`` has one chunk per tile, so writing a tile touches only that tile's files: a finished
tile is never written again, and a sweep interrupted at any moment resumes by computing
exactly the tiles whose flag is not set (a tile is flagged only after its values are on disk).
Read a store with ``xarray.open_zarr(path)`` or :func:`open_map`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..core.analysis.parameter_maps import MapSpec, Tile
from ..core.errors import ExplorerError, ParameterError

#: the attribute holding the settings
SETTINGS_ATTR = "explorer_map"


class StoreError(ExplorerError, ValueError):
    """A map store cannot be used: it holds another map, is not a map store, or is damaged."""


def _dims(spec: MapSpec) -> tuple[str, ...]:
    base = (spec.y.name, spec.x.name) if spec.y is not None else (spec.x.name,)
    return base + (("exponent",) if spec.extra_shape else ())


def _region(spec: MapSpec, tile: Tile) -> tuple[slice, ...]:
    if spec.y is None:
        return (slice(tile.x0, tile.x1),)
    return (slice(tile.y0, tile.y1), slice(tile.x0, tile.x1))


def _squeeze(spec: MapSpec, values: np.ndarray) -> np.ndarray:
    """A tile's (rows, cols[, D]) values in the map's own layout (1-D maps have no row axis)."""
    return values[0] if spec.y is None else values


def dataset(spec: MapSpec, data: np.ndarray | Any, chunk: int | None = None,
            done: np.ndarray | Any | None = None):
    """The map as an xarray Dataset: ``data`` over the axes' coordinates, with units, the
    settings as attributes, and the per-tile ``done`` flags."""
    import xarray as xr

    q = spec.quantity
    name = q.output
    coords: dict[str, Any] = {spec.x.name: spec.x.values()}
    if spec.y is not None:
        coords[spec.y.name] = spec.y.values()
    if spec.extra_shape:
        coords["exponent"] = np.arange(1, spec.system.dim + 1)
    ds = xr.Dataset({name: (_dims(spec), data)}, coords=coords)
    ds[name].attrs.update(long_name=_long_name(spec), units=spec.units())
    for ax in spec.axes:
        ds[ax.name].attrs.update(kind=spec.axis_kind(ax), spacing="log" if ax.log else "linear")
    if done is not None:
        ds["done"] = (("tile_row", "tile_col"), done)
        ds["done"].attrs["long_name"] = "1 where the tile is computed"
    ds.attrs[SETTINGS_ATTR] = spec.settings()
    if chunk is not None:
        ds.attrs["chunk"] = int(chunk)
    ds.attrs["title"] = f"{spec.system.title or spec.system.name}: {_long_name(spec)}"
    return ds


def _long_name(spec: MapSpec) -> str:
    q = spec.quantity
    return {"lyapunov": "largest Lyapunov exponent", "spectrum": "Lyapunov spectrum",
            "ky": "Kaplan-Yorke dimension", "period": "period",
            "divergence": "divergence time", "basin": "basin label (attractor index; -1 diverged, -2 none)",
            "mean": f"mean of {q.variable}", "max": f"maximum of {q.variable}"}[q.kind]


class MemoryStore:
    """Tiles kept in a numpy array (the page's maps); :meth:`dataset` gives the xarray view."""

    def __init__(self, spec: MapSpec, chunk: int):
        self.spec, self.chunk = spec, int(chunk)
        self.values = np.full(spec.shape, np.nan)
        tiles = spec.tiles(chunk)
        self.done = np.zeros((tiles[-1].iy + 1, tiles[-1].ix + 1), dtype=np.uint8)

    def done_tiles(self) -> set[tuple[int, int]]:
        return {tuple(ix) for ix in np.argwhere(self.done == 1).tolist()}

    def write(self, tile: Tile, values: np.ndarray) -> None:
        self.values[_region(self.spec, tile)] = _squeeze(self.spec, values)
        self.done[tile.iy, tile.ix] = 1

    def dataset(self):
        return dataset(self.spec, self.values, self.chunk, self.done)


class ZarrStore:
    """A map store on disk (see the module docstring). Opening a store that holds a map with
    other settings raises :class:`StoreError`, unless ``overwrite``."""

    def __init__(self, path: str | os.PathLike, spec: MapSpec, chunk: int, overwrite: bool = False):
        import zarr

        self.path, self.spec, self.chunk = Path(path), spec, int(chunk)
        tiles = spec.tiles(chunk)
        self.tile_grid = (tiles[-1].iy + 1, tiles[-1].ix + 1)
        if self.path.exists() and overwrite:
            shutil.rmtree(self.path)
        self.resumed = self.path.exists()
        if self.resumed:
            self._check_existing()
        else:
            if not self.path.parent.exists():
                raise ParameterError(f"directory {str(self.path.parent)!r} does not exist")
            self._create()
        self.group = zarr.open_group(str(self.path), mode="r+")

    def _create(self) -> None:
        import dask.array as da

        spec = self.spec
        tw, th = spec.tile_shape(self.chunk)
        chunks = ((th, tw) if spec.y is not None else (tw,)) + spec.extra_shape
        data = da.full(spec.shape, np.nan, chunks=chunks, dtype=np.float64)
        done = da.zeros(self.tile_grid, chunks=(1, 1), dtype=np.uint8)
        ds = dataset(spec, data, self.chunk, done)
        tmp = self.path.with_name(self.path.name + ".creating")
        if tmp.exists():
            shutil.rmtree(tmp)
        ds.to_zarr(str(tmp), mode="w-", compute=False, consolidated=False,
                   encoding={spec.quantity.output: {"chunks": chunks}, "done": {"chunks": (1, 1)}})
        os.replace(tmp, self.path)                     # a store exists whole or not at all

    def _check_existing(self) -> None:
        import zarr

        try:
            attrs = dict(zarr.open_group(str(self.path), mode="r").attrs)
        except Exception as e:                             # not a Zarr group at all
            raise StoreError(f"{self.path} exists and is not a map store ({type(e).__name__}); "
                             "choose another --out") from None
        have = attrs.get(SETTINGS_ATTR)
        if have is None:
            raise StoreError(f"{self.path} is a Zarr store but not a parameter map; choose another --out")
        want = json.loads(json.dumps(self.spec.settings()))
        if have != want or attrs.get("chunk") != self.chunk:
            diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
            if attrs.get("chunk") != self.chunk:
                diff.append("chunk")
            raise StoreError(f"{self.path} holds a different map (differs in {', '.join(diff)}); "
                             "rerun with the same settings to resume, or use --overwrite or another --out")

    def done_tiles(self) -> set[tuple[int, int]]:
        done = np.asarray(self.group["done"][...])
        return {tuple(ix) for ix in np.argwhere(done == 1).tolist()}

    def write(self, tile: Tile, values: np.ndarray) -> None:
        self.group[self.spec.quantity.output][_region(self.spec, tile)] = _squeeze(self.spec, values)
        self.group["done"][tile.iy, tile.ix] = 1                 # only after the values are stored

    def dataset(self):
        return open_map(self.path)


def open_map(path: str | os.PathLike):
    """A map store as an xarray Dataset (lazy; ``.load()`` reads it)."""
    import xarray as xr

    p = Path(path)
    if not p.exists():
        raise StoreError(f"no map store at {p}")
    try:
        ds = xr.open_zarr(str(p), consolidated=False)
    except Exception as e:
        raise StoreError(f"{p} is not a readable map store ({type(e).__name__}: {e})") from None
    if SETTINGS_ATTR not in ds.attrs:
        raise StoreError(f"{p} is a Zarr store but not a parameter map")
    return ds


def zipped(ds) -> bytes:
    """The map as a zipped Zarr store (what the page offers for download): unzip and open with
    ``xarray.open_zarr``."""
    ds = ds.load()
    ds.attrs[SETTINGS_ATTR] = json.loads(json.dumps(ds.attrs[SETTINGS_ATTR]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "map.zarr"
        ds.to_zarr(str(root), mode="w", consolidated=False)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(root.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(root.parent).as_posix())
        return buf.getvalue()


def map_png(ds, *, scale: int = 0) -> bytes:
    """The map as a PNG image (one pixel per grid point, enlarged to at least ~400 px; the
    page's colour maps; grey where NaN), top row = highest y."""
    from PIL import Image
    import colorcet

    settings = ds.attrs[SETTINGS_ATTR]
    q = settings["quantity"].split(":")[0]
    name = next(v for v in ds.data_vars if v != "done")
    vals = np.asarray(ds[name].values, dtype=np.float64)
    if vals.ndim == 3:
        vals = vals[..., 0]
    if vals.ndim == 1:
        vals = vals[None, :]
    vals = np.where(np.isinf(vals), np.nan, vals)
    finite = vals[np.isfinite(vals)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    categorical = q in ("period", "basin")
    if q in ("lyapunov", "spectrum"):
        hi = max(abs(lo), abs(hi)) or 1.0
        lo = -hi
    cmap = (colorcet.glasbey_light if categorical else
            colorcet.CET_D1A if q in ("lyapunov", "spectrum") else colorcet.CET_L20)
    palette = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in cmap], dtype=np.uint8)
    if categorical:
        idx = np.nan_to_num(vals - lo, nan=0).astype(int) % len(palette)
    else:
        t = (vals - lo) / ((hi - lo) or 1.0)
        idx = np.clip(np.nan_to_num(t, nan=0) * (len(palette) - 1), 0, len(palette) - 1).astype(int)
    rgb = palette[idx]
    rgb[~np.isfinite(vals)] = (233, 236, 239)
    img = Image.fromarray(rgb[::-1])
    k = scale or max(1, 400 // max(vals.shape))
    if k > 1:
        img = img.resize((vals.shape[1] * k, vals.shape[0] * k), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
