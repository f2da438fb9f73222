"""Size limits, checked before any memory is taken. Overridable by environment variables.

``EXPLORER_MAX_BATCH``      largest number of trajectories in one call (default 10,000,000)
``EXPLORER_MAX_BYTES``      largest recorded output of one call (default 4 GiB)
``EXPLORER_MAX_WORK``       largest number of trajectory-steps in one call (default 2e11)
"""

from __future__ import annotations

import os

from .errors import SizeLimitError


def _env_int(name: str, default: int) -> int:
    try:
        return int(float(os.environ.get(name, default)))
    except ValueError:
        return default


def max_batch() -> int:
    return _env_int("EXPLORER_MAX_BATCH", 10_000_000)


def max_bytes() -> int:
    return _env_int("EXPLORER_MAX_BYTES", 4 * 2**30)


def max_work() -> int:
    return _env_int("EXPLORER_MAX_WORK", 200_000_000_000)


def check_size(*, batch: int, steps: int, saved: int, dim: int, itemsize: int, what: str = "run") -> None:
    """Refuse a request whose batch, recorded bytes or total work exceed the limits."""
    if batch < 1:
        raise SizeLimitError(f"the number of trajectories must be at least 1, got {batch}")
    if steps < 0:
        raise SizeLimitError(f"the number of steps must be non-negative, got {steps}")
    if batch > max_batch():
        raise SizeLimitError(
            f"{what}: {batch:,} trajectories exceed the limit of {max_batch():,} (EXPLORER_MAX_BATCH)")
    nbytes = saved * batch * dim * itemsize
    if nbytes > max_bytes():
        raise SizeLimitError(
            f"{what}: recording {saved:,} samples x {batch:,} trajectories x {dim} variables needs "
            f"{nbytes / 2**30:.1f} GiB, over the limit of {max_bytes() / 2**30:.1f} GiB "
            f"(record less often with save_every, or set EXPLORER_MAX_BYTES)")
    work = steps * batch
    if work > max_work():
        raise SizeLimitError(
            f"{what}: {steps:,} steps x {batch:,} trajectories = {work:.2e} trajectory-steps exceed "
            f"the limit of {max_work():.1e} (EXPLORER_MAX_WORK)")
