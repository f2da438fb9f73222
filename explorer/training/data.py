"""Training data: trajectories of a system or user arrays, validated and standardised.

Every series becomes a :class:`TimeSeries`: a (T, N) float32 tensor standardised per
coordinate (zero mean, unit variance), with the :class:`Normalisation` that maps model output
back to the data's units. Sources:

* :func:`from_system`: a trajectory of any :class:`~explorer.core.system.DynamicalSystem`
  from :func:`explorer.core.simulate.simulate`, with observation noise (a fraction of each
  coordinate's standard deviation) and subsampling;
* :func:`from_array`: a (T, N) array, checked for shape, NaN/inf, length and size;
* :func:`from_file` / :func:`load_timeseries`: CSV (optional header row), NPY or NPZ.

Bad input raises :class:`DataError` (content) or :class:`~explorer.core.errors.ShapeError`,
:class:`~explorer.core.errors.SizeLimitError` with one-line messages; nothing else escapes.
:func:`sample_windows` draws training subsequences with an explicit generator.
"""

from __future__ import annotations

import dataclasses
import math
import os
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.errors import ExplorerError, ParameterError, ShapeError, SizeLimitError
from ..core.simulate import simulate
from ..core.system import DynamicalSystem

#: fewest time samples accepted
MIN_LENGTH = 20
#: most values (T * N) accepted in one series
MAX_VALUES = 20_000_000
#: largest file :func:`load_timeseries` reads
MAX_FILE_BYTES = 256 * 2**20


class DataError(ExplorerError, ValueError):
    """Time-series data are malformed: unreadable file, non-numeric or non-finite values,
    too short, or a constant coordinate."""


@dataclass(frozen=True)
class Normalisation:
    """Per-coordinate standardisation ``x_std = (x - mean) / std``; float64 (N,) tensors."""

    mean: torch.Tensor
    std: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Data units -> standardised (dtype and device follow ``x``)."""
        return (x - self.mean.to(x)) / self.std.to(x)

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised -> data units (dtype and device follow ``x``)."""
        return x * self.std.to(x) + self.mean.to(x)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.clone(), "std": self.std.clone()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Normalisation:
        return cls(torch.as_tensor(d["mean"], dtype=torch.float64),
                   torch.as_tensor(d["std"], dtype=torch.float64))


@dataclass(frozen=True)
class TimeSeries:
    """A standardised training series.

    Attributes:
        x: (T, N) float32, standardised per coordinate.
        normalisation: maps ``x`` back to the data's units.
        dt: time between samples (1 for maps and unknown sampling).
        variables: names of the N coordinates.
        source: where the data came from (a system name, a file name, ``"array"``).
        lyapunov: the source's largest Lyapunov exponent per time unit, when known.
        reference: (T, N) float32 noise-free version of ``x`` (same standardisation) when the
            data were simulated with observation noise, else ``None``: the ground truth that
            invariant metrics can be measured against (noise alone puts a floor under
            :math:`D_{stsp}` against the noisy data).
    """

    x: torch.Tensor
    normalisation: Normalisation
    dt: float = 1.0
    variables: tuple[str, ...] = ()
    source: str = "array"
    lyapunov: float | None = None
    reference: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return int(self.x.shape[0])

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    def raw(self) -> torch.Tensor:
        """The series in the data's units, (T, N) float64."""
        return self.normalisation.invert(self.x.to(torch.float64))

    def as_dict(self) -> dict[str, Any]:
        """Plain data (tensors, strings, numbers) for checkpoints."""
        return {"x": self.x.clone(), **self.normalisation.as_dict(), "dt": float(self.dt),
                "variables": list(self.variables), "source": self.source,
                "lyapunov": self.lyapunov,
                "reference": None if self.reference is None else self.reference.clone()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TimeSeries:
        return cls(x=torch.as_tensor(d["x"], dtype=torch.float32),
                   normalisation=Normalisation.from_dict(d), dt=float(d["dt"]),
                   variables=tuple(d["variables"]), source=str(d["source"]),
                   lyapunov=None if d.get("lyapunov") is None else float(d["lyapunov"]),
                   reference=None if d.get("reference") is None
                   else torch.as_tensor(d["reference"], dtype=torch.float32))


# ----------------------------------------------------------------------------- arrays
def _numeric(x, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise DataError(f"{what} is not a numeric array ({type(x).__name__})") from e
    if a.dtype.kind not in "biuf":
        raise DataError(f"{what} must hold real numbers, got dtype {a.dtype}")
    return a.astype(np.float64, copy=False)


def validate_array(x, *, min_length: int = MIN_LENGTH, max_values: int = MAX_VALUES,
                   what: str = "the data") -> np.ndarray:
    """Check a time series and return it as a (T, N) float64 array.

    Raises:
        ShapeError: not 1-D or 2-D. SizeLimitError: more than ``max_values`` values.
        DataError: non-numeric, NaN/inf, shorter than ``min_length``, a constant coordinate.
    """
    a = _numeric(x, what)
    if a.ndim == 1:
        a = a[:, None]                                                # (T,) -> (T, 1)
    if a.ndim != 2:
        raise ShapeError(f"{what} must be a (T, N) array (time along rows), got shape {a.shape}")
    if a.size > max_values:
        raise SizeLimitError(f"{what} has {a.size:,} values, over the limit of {max_values:,}; "
                             "subsample it first")
    T, N = a.shape
    if T < min_length:
        hint = (f"; it looks transposed: pass the ({N}, {T}) array with time along rows"
                if N >= min_length else "")
        raise DataError(f"{what} has {T} time samples, fewer than the {min_length} needed{hint}")
    if N == 0:
        raise ShapeError(f"{what} has no columns")
    bad = ~np.isfinite(a)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{what} contains {int(bad.sum())} NaN or inf value(s); first at row "
                        f"{int(r)}, column {int(c)}")
    const = np.flatnonzero(a.std(0) == 0)
    if const.size:
        raise DataError(f"{what}: column {int(const[0])} is constant (no dynamics to learn)")
    return a


def from_array(x, *, dt: float = 1.0, variables: Sequence[str] | None = None,
               source: str = "array", lyapunov: float | None = None,
               min_length: int = MIN_LENGTH, max_values: int = MAX_VALUES) -> TimeSeries:
    """A validated, standardised :class:`TimeSeries` from a (T, N) array (or (T,)).

    Args:
        x: numbers with time along the first axis (numpy, torch or nested lists).
        dt: time between samples; variables: N names (default ``x1 .. xN``).
        source, lyapunov: metadata (see :class:`TimeSeries`).
        min_length, max_values: limits (see :func:`validate_array`).
    """
    a = validate_array(x, min_length=min_length, max_values=max_values)
    if not (math.isfinite(dt) and dt > 0):
        raise ParameterError(f"dt must be a positive number, got {dt!r}")
    N = a.shape[1]
    if variables is None:
        variables = tuple(f"x{i + 1}" for i in range(N))
    variables = tuple(str(v) for v in variables)
    if len(variables) != N:
        raise ShapeError(f"{len(variables)} variable names for {N} columns")
    t = torch.from_numpy(np.ascontiguousarray(a))                     # (T, N) float64
    mean, std = t.mean(0), t.std(0)
    norm = Normalisation(mean, std)
    return TimeSeries(x=norm.apply(t).float(), normalisation=norm, dt=float(dt),
                      variables=variables, source=source, lyapunov=lyapunov)


def from_system(system: DynamicalSystem, *, steps: int = 100_000, dt: float | None = None,
                transient: int = 5_000, save_every: int = 1, noise: float = 0.05,
                observe: Sequence[int] | None = None, x0=None,
                generator: torch.Generator | None = None) -> TimeSeries:
    r"""A noisy, standardised trajectory of ``system`` (simulated in float64).

    Observation noise is Gaussian with standard deviation ``noise`` times each coordinate's
    standard deviation: :math:`\tilde x_t = x_t + \eta\, \sigma \odot \epsilon_t`,
    :math:`\epsilon_t \sim \mathcal N(0, I)`.

    Args:
        steps: integration steps recorded (T = steps // save_every + 1 samples).
        dt: solver step (default the system's); the series' spacing is ``dt * save_every``.
        transient: steps discarded first (lands on the attractor).
        save_every: subsampling factor.
        noise: observation noise fraction (0.05 is the reference setting for Lorenz-63).
        observe: indices of the observed coordinates (default all).
        x0: initial state (default the system's).
        generator: RNG of the noise (explicit; nothing is seeded globally).
    """
    if not (noise >= 0 and math.isfinite(noise)):
        raise ParameterError(f"noise must be a non-negative fraction, got {noise!r}")
    tr = simulate(system, x0, steps=steps, dt=dt, transient=transient, save_every=save_every,
                  dtype=torch.float64, device="cpu")
    if tr.status != "ok":
        raise DataError(f"the {system.title or system.name} trajectory diverged: {tr.message}")
    x = tr.x[:, 0]                                                    # (T, D)
    variables = tuple(system.variables)
    if observe is not None:
        idx = [int(i) for i in observe]
        if not idx or any(not 0 <= i < system.dim for i in idx):
            raise ParameterError(f"observe must list coordinates in 0..{system.dim - 1}, got {observe!r}")
        x = x[:, idx]
        variables = tuple(variables[i] for i in idx)
    clean = x
    if noise > 0:
        eps = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        x = x + noise * x.std(0) * eps
    spacing = tr.dt * save_every
    ref = system.lyapunov_reference
    lyap = None
    if ref is not None:                 # the published exponent holds at its own parameters
        target = {**system.defaults(), **dict(ref.params or {})}
        if all(not isinstance(system.params.get(k), torch.Tensor) and k in system.params
               and abs(float(system.params[k]) - float(v)) <= 1e-12 * (1 + abs(float(v)))
               for k, v in target.items()):
            lyap = float(ref.exponents[0])
    ts = from_array(x, dt=spacing, variables=variables, source=system.name, lyapunov=lyap)
    if noise > 0:
        ts = dataclasses.replace(ts, reference=ts.normalisation.apply(clean).float())
    return ts


# ----------------------------------------------------------------------------- files
def _parse_csv(lines, name: str, max_values: int, *, block: int = 8192
               ) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Rows of numbers from text lines, parsed a block of lines at a time (NumPy's reader)
    into float64 pieces: a file over ``max_values`` is refused as soon as it passes the
    limit, so memory stays near 8 bytes a value. A bad block is re-read line by line for a
    message naming the line."""
    pieces: list[np.ndarray] = []
    count = 0
    header = None
    delim: str | None = None
    width: int | None = None
    pending: list[tuple[int, str]] = []

    def flush() -> None:
        nonlocal count
        if not pending:
            return
        try:
            a = np.loadtxt([t for _, t in pending], delimiter=delim or None, ndmin=2,
                           dtype=np.float64, comments=None)
            ok = a.shape == (len(pending), width)
        except ValueError:
            ok = False
        if not ok:
            a = np.asarray([_csv_row(t, delim, width, name, n) for n, t in pending])
        count += a.size
        if count > max_values:
            raise SizeLimitError(f"{name} has more than {max_values:,} values (line "
                                 f"{pending[-1][0]}); subsample it first")
        pieces.append(a)
        pending.clear()

    for lineno, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if delim is None:
            delim = next((d for d in (",", ";", "\t") if d in s), "")
        if width is None:
            toks = [t.strip() for t in (s.split(delim) if delim else s.split())]
            width = len(toks)
            if not all(_is_float(t) for t in toks):
                header = tuple(t.strip("\"'") for t in toks)           # a header row
                continue
        pending.append((lineno, s))
        if len(pending) >= block:
            flush()
    flush()
    if not pieces:
        raise DataError(f"{name} holds no numeric rows")
    return (pieces[0] if len(pieces) == 1 else np.concatenate(pieces)), header


def _csv_row(s: str, delim: str | None, width: int | None, name: str, lineno: int) -> list[float]:
    toks = [t.strip() for t in (s.split(delim) if delim else s.split())]
    bad = next((t for t in toks if not _is_float(t)), None)
    if bad is not None:
        raise DataError(f"{name}, line {lineno}: {bad!r} is not a number")
    if len(toks) != width:
        raise DataError(f"{name}, line {lineno}: {len(toks)} values, expected {width}")
    return [float(t) for t in toks]


def _is_float(t: str) -> bool:
    try:
        float(t)
        return True
    except ValueError:
        return False


#: room for an NPY header in a ZIP member's size check
NPY_HEADER_ROOM = 2**16


def read_npy(fp, name: str, check: Callable[[tuple[int, ...], np.dtype], tuple[int, ...]], *,
             error: type[DataError] = DataError) -> np.ndarray:
    """An array from an open NPY stream with its header checked first: ``check(shape, dtype)``
    raises for what the caller refuses (dtype, shape, too many values) and returns the shape
    to read, so nothing but the header is read before a refusal (a small compressed file
    cannot make the reader allocate gigabytes). Only the bytes the header promises are read;
    a short stream is reported as truncated (``error``, one line)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp)
        else:
            raise error(f"{name}: NPY format version {version[0]}.{version[1]} is not supported "
                        "(save with numpy.save)")
    except (ValueError, EOFError, SyntaxError, TypeError) as e:
        raise error(f"{name}: not a valid NPY file ({_first_line(e)})") from None
    if dtype.hasobject:
        raise error(f"{name}: holds Python objects (a pickled array); only numeric arrays are "
                    "accepted")
    shape = check(tuple(int(n) for n in shape), dtype)
    a = np.empty(math.prod(shape), dtype=dtype)
    buf, got = memoryview(a).cast("B"), 0
    while got < len(buf):
        n = fp.readinto(buf[got:])
        if not n:
            raise error(f"{name}: truncated: the header promises {len(buf):,} bytes of data, "
                        f"the file holds {got:,}")
        got += n
    return a.reshape(shape, order="F" if fortran else "C")


def npz_member(zf: zipfile.ZipFile, members: Sequence[zipfile.ZipInfo], preferred: str, name: str,
               max_values: int, *, error: type[DataError] = DataError,
               size_error: type[ExplorerError] = SizeLimitError) -> zipfile.ZipInfo:
    """The NPZ member to read (``preferred``, or the only one), refused when it would unpack
    to more bytes than ``max_values`` float64 values and a header (the ZIP's own size field
    bounds what the reader decompresses)."""
    keys = [m.filename[:-4] for m in members]
    if preferred in keys:
        info = members[keys.index(preferred)]
    elif len(members) == 1:
        info = members[0]
    else:
        raise error(f"{name} holds arrays {', '.join(keys) or '(none)'}; store the series as "
                    f"'{preferred}' or as the only array")
    limit = max_values * 8 + NPY_HEADER_ROOM
    if info.file_size > limit:
        raise size_error(f"{name}: {info.filename} would decompress to "
                         f"{info.file_size / 2**20:,.1f} MiB, over the limit of {max_values:,} values")
    return info


def _series_check(name: str, max_values: int):
    def check(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
        if dtype.kind not in "biuf" or dtype.fields is not None:
            raise DataError(f"{name} must hold real numbers, got dtype {dtype}")
        if len(shape) > 2:
            raise ShapeError(f"{name} must be a (T, N) array (time along rows), got shape {shape}")
        count = math.prod(shape)
        if count > max_values:
            raise SizeLimitError(f"{name} has {count:,} values, over the limit of "
                                 f"{max_values:,}; subsample it first")
        return shape
    return check


def _load(path, max_bytes: int, max_values: int = MAX_VALUES
          ) -> tuple[np.ndarray, tuple[str, ...] | None]:
    p = os.fspath(path)
    name = os.path.basename(p)
    if not os.path.isfile(p):
        raise DataError(f"no such file: {p}")
    size = os.path.getsize(p)
    if size > max_bytes:
        raise SizeLimitError(f"{name} is {size / 2**20:.1f} MiB, over the limit of "
                             f"{max_bytes / 2**20:.0f} MiB")
    ext = os.path.splitext(p)[1].lower()
    try:
        if ext in (".csv", ".txt", ".tsv", ".dat"):
            with open(p, encoding="utf-8") as f:
                return _parse_csv(f, name, max_values)
        if ext == ".npy":
            with open(p, "rb") as f:
                return read_npy(f, name, _series_check(name, max_values)), None
        if ext == ".npz":
            with zipfile.ZipFile(p) as z:
                members = [i for i in z.infolist() if i.filename.endswith(".npy")]
                info = npz_member(z, members, "x", name, max_values)
                with z.open(info) as f:
                    return read_npy(f, name, _series_check(name, max_values)), None
    except ExplorerError:
        raise
    except UnicodeDecodeError as e:
        raise DataError(f"{name} is not a UTF-8 text file") from e
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error,
            NotImplementedError, RuntimeError) as e:
        raise DataError(f"{name} could not be read as {ext[1:].upper()}: {_first_line(e)}") from e
    raise DataError(f"{name}: unknown file type {ext or '(none)'}; use .csv, .npy or .npz")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def load_timeseries(path, *, max_bytes: int = MAX_FILE_BYTES, max_values: int = MAX_VALUES) -> np.ndarray:
    """Read a time series from CSV (comma, semicolon, tab or space separated; an optional
    header row; ``#`` comments), NPY, or NPZ (the array ``x``, or the only array).

    Returns the raw array as float64 (validate it with :func:`validate_array` or load it with
    :func:`from_file`). Raises :class:`DataError` naming the file (and line) on malformed
    input, :class:`SizeLimitError` for files over ``max_bytes`` or holding more than
    ``max_values`` values: read from the NPY header (also inside an NPZ) before any data is
    read, and while a CSV streams in, so a refusal costs no memory.
    """
    a, _ = _load(path, max_bytes, max_values)
    return _numeric(a, os.path.basename(os.fspath(path)))


def from_file(path, *, dt: float = 1.0, max_bytes: int = MAX_FILE_BYTES, **kw) -> TimeSeries:
    """:func:`load_timeseries` then :func:`from_array` (a CSV header names the variables)."""
    limits = {k: kw.pop(k) for k in ("min_length", "max_values") if k in kw}
    a, header = _load(path, max_bytes, limits.get("max_values", MAX_VALUES))
    name = os.path.basename(os.fspath(path))
    a = validate_array(a, what=name, **limits)
    if header is not None and len(header) == a.shape[1] and "variables" not in kw:
        kw["variables"] = header
    return from_array(a, dt=dt, source=name, **kw)


# ----------------------------------------------------------------------------- batches
def sample_windows(x: torch.Tensor, length: int, batch: int, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``batch`` random subsequences of ``length`` samples from ``x`` (T, N), time-major.

    Starts are uniform over ``0 .. T - length`` and drawn from ``generator``.

    Returns:
        (length, batch, N), same dtype and device as ``x``.
    """
    T = x.shape[0]
    if length > T:
        raise ParameterError(f"a window of {length} samples does not fit a series of {T}")
    starts = torch.randint(0, T - length + 1, (batch,), generator=generator)     # (B,)
    idx = starts.unsqueeze(0) + torch.arange(length).unsqueeze(1)               # (L, B)
    return x[idx.to(x.device)]                                                  # (L, B, N)
