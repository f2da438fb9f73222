"""Run a parameter map on Dask: one task per tile, results stored as they finish.

The same code path on a laptop and on a cluster: :func:`run_map` submits one Dask task per
tile not yet done (:meth:`MapSpec.evaluate`, one batched call on the fastest local path of the
worker: native C, Inductor or CUDA, whatever :func:`~explorer.core.simulate.simulate` and the
Lyapunov code pick there), and writes each result from this process into the store as it
arrives (so the store needs no shared file system). Dask reschedules the tasks of a worker
that dies, and retries a task that raises up to ``retries`` times; both count as retried.

Where the work runs (:func:`dask_client`): the scheduler at ``scheduler`` or
``EXPLORER_DASK_SCHEDULER`` (``tcp://HOST:PORT``: dask-jobqueue, Kubernetes, ``dask
scheduler`` by hand); else a ``LocalCluster`` that starts and stops with the call, in this
process (threads) by default or in worker processes with ``processes=True``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from ..core.analysis.parameter_maps import MapSpec, Tile
from ..core.errors import ExplorerError, ParameterError
from .store import MemoryStore, ZarrStore

#: the environment variable naming a running Dask scheduler
SCHEDULER_ENV = "EXPLORER_DASK_SCHEDULER"
#: default points per tile: large enough that the per-call overhead is small
DEFAULT_CHUNK = 16_384


class SweepError(ExplorerError, RuntimeError):
    """A tile failed on every try, or the cluster could not be reached."""


@dataclass
class MapRun:
    """What :func:`run_map` did: the store, the counts and the time."""

    spec: MapSpec
    store: Any
    tiles: int
    computed: int = 0
    skipped: int = 0
    retried: int = 0
    seconds: float = 0.0
    stopped: bool = False
    workers: int = 0             # tasks the cluster runs at once (its worker threads)
    scheduler: str = ""
    tile_seconds: list[float] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.computed + self.skipped == self.tiles

    def dataset(self):
        return self.store.dataset()

    def summary(self) -> dict[str, Any]:
        """The JSON summary of ``dynamics-explorer sweep``."""
        path = getattr(self.store, "path", None)
        return {"shape": list(self.spec.shape), "quantity": self.spec.quantity.label,
                "points": self.spec.n_points, "seconds": round(self.seconds, 3),
                "points_per_second": (round(self.computed_points / self.seconds, 1)
                                      if self.seconds > 0 else None),
                "chunks": self.tiles, "chunks_done": self.computed + self.skipped,
                "chunks_computed": self.computed, "chunks_resumed": self.skipped,
                "chunks_retried": self.retried, "complete": self.complete,
                "stopped": self.stopped, "workers": self.workers, "scheduler": self.scheduler,
                "store": str(path) if path is not None else None}

    @property
    def computed_points(self) -> int:
        return int(round(self.computed * self.spec.n_points / max(1, self.tiles)))


def scheduler_address(scheduler: str | None = None) -> str | None:
    """The scheduler to attach to: ``scheduler``, else ``EXPLORER_DASK_SCHEDULER``, else None."""
    addr = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if addr is not None and "://" not in addr:
        raise ParameterError(f"a scheduler address looks like tcp://HOST:PORT, got {addr!r}")
    return addr


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None,
                processes: bool = False) -> Iterator[Any]:
    """A Dask client for the duration of the block: attached to ``scheduler`` (see
    :func:`scheduler_address`), or to a ``LocalCluster`` running ``workers`` tasks at once
    (default: the machine's cores): single-threaded worker processes with ``processes``,
    else one worker in this process with that many threads."""
    from dask.distributed import Client, LocalCluster

    addr = scheduler_address(scheduler)
    if addr is not None:
        try:
            client = Client(addr, timeout="10s")
        except (OSError, TimeoutError) as e:
            raise SweepError(f"cannot reach the Dask scheduler at {addr}: {e}") from None
        try:
            yield client
        finally:
            client.close()
        return
    n = int(workers or os.cpu_count() or 1)
    if n < 1:
        raise ParameterError(f"workers must be at least 1, got {workers}")
    # worker processes: one thread each; in this process: one worker with n threads
    cluster = LocalCluster(n_workers=n if processes else 1, threads_per_worker=1 if processes else n,
                           processes=processes, dashboard_address=":0", silence_logs=40)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _evaluate(spec: MapSpec, tile: Tile, device=None) -> tuple[np.ndarray, float]:
    """The task: one tile, timed (runs on a worker)."""
    _limit_threads()
    t0 = time.perf_counter()
    values = spec.evaluate(tile, device=device)
    return values, time.perf_counter() - t0


def _limit_threads() -> None:
    """In a worker process of its own, let torch (and the native OpenMP loops) use only the
    worker's threads, so several workers on one machine do not each start a thread per core.
    A worker inside the caller's process leaves the count alone: it is the whole process's
    (setting it there would slow everything else the process runs, a served app's sessions
    included)."""
    import torch
    from dask.distributed import get_worker

    try:
        w = get_worker()
    except ValueError:                                    # not on a worker
        return
    n = int(getattr(w.state, "nthreads", 0) or 0)
    if n and getattr(w, "nanny", None) is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def with_attractors(spec: MapSpec, out: str | os.PathLike | None = None) -> MapSpec:
    """A basin map with its attractor list: the one stored in ``out`` when resuming it (so the
    labels stay those of the finished tiles), else found by :func:`find_attractors`."""
    import dataclasses

    from ..core.analysis.parameter_maps import find_attractors
    from .store import SETTINGS_ATTR

    if spec.quantity.kind != "basin" or spec.attractors:
        return spec
    if out is not None and os.path.exists(out):
        import zarr

        try:
            stored = dict(zarr.open_group(str(out), mode="r").attrs).get(SETTINGS_ATTR, {})
        except Exception:
            stored = {}
        if stored.get("attractors"):
            return dataclasses.replace(spec, attractors=tuple(np.asarray(a) for a in stored["attractors"]))
    found = find_attractors(spec)
    if not found:
        raise SweepError("every sampled start diverged: no attractor to label basins against")
    return dataclasses.replace(spec, attractors=found)


def _retries_used(client, keys: list[str], retries: int) -> dict[str, int]:
    """How many times each task was re-run: rescheduled after its worker died (``suspicious``)
    or retried after an error."""
    def count(dask_scheduler, keys=keys, retries=retries):
        out = {}
        for k in keys:
            ts = dask_scheduler.tasks.get(k)
            if ts is not None:
                out[k] = int(ts.suspicious) + max(0, retries - int(ts.retries))
        return out
    try:
        return client.run_on_scheduler(count)
    except Exception:                                   # an old scheduler: no count, no failure
        return {}


_shared: dict[str, Any] = {}
_shared_lock = threading.Lock()


def shared_client():
    """The process's own Dask client (the served app's sessions share it): a ``LocalCluster``
    in this process, one worker with a thread per core, started on first use and closed at
    exit, or the scheduler of ``EXPLORER_DASK_SCHEDULER``. Tiles of every session queue on it,
    so several maps at once share the cores instead of oversubscribing them."""
    with _shared_lock:
        client = _shared.get("client")
        if client is not None and client.status == "running":
            return client
        from dask.distributed import Client, LocalCluster

        addr = scheduler_address()
        if addr is not None:
            client = Client(addr, timeout="10s", set_as_default=False)
        else:
            cluster = LocalCluster(n_workers=1, threads_per_worker=os.cpu_count() or 1,
                                   processes=False, dashboard_address=":0", silence_logs=40)
            _shared["cluster"] = cluster
            client = Client(cluster, set_as_default=False)
        _shared["client"] = client
        if not _shared.get("atexit"):
            import atexit
            atexit.register(_close_shared)
            _shared["atexit"] = True
        return client


def _close_shared() -> None:
    for key in ("client", "cluster"):
        obj = _shared.pop(key, None)
        if obj is not None:
            try:
                obj.close()
            except Exception:                        # shutting down: nothing more to do
                pass


def run_map(spec: MapSpec, out: str | os.PathLike | None = None, *, chunk: int = DEFAULT_CHUNK,
            store=None, client=None, scheduler: str | None = None, workers: int | None = None,
            processes: bool = False, overwrite: bool = False, retries: int = 3, device=None,
            progress: Callable[[MapRun, Tile | None, np.ndarray | None], None] | None = None,
            stop: threading.Event | None = None) -> MapRun:
    """Compute ``spec`` tile by tile on Dask; store each tile as it finishes.

    Args:
        out: a Zarr store path (created, or resumed when it holds the same map: its finished
            tiles are skipped), or None to keep the map in memory (``MapRun.dataset()``).
        store: instead of ``out``, a store made by the caller (a :class:`MemoryStore` the page
            reads while the map fills in); its spec and chunk are used.
        chunk: points per tile (whole grid rows when a row fits).
        client: an existing Dask client (the page's shared one); else one from
            :func:`dask_client` (``scheduler``, ``workers``, ``processes``) for this call.
        retries: re-runs of a tile whose task raised (a dead worker's tiles are rescheduled
            by Dask in any case).
        progress: called after each stored tile with (run, tile, values), and once at the
            start with (run, None, None); ``stop``: set it to cancel the tiles not yet done
            (the store keeps the finished ones; rerun to resume).

    Returns:
        :class:`MapRun` with the store, the tiles computed, skipped (resumed) and retried.

    Raises:
        StoreError: ``out`` holds another map; SweepError: a tile failed on every try.
    """
    if store is not None:
        spec, chunk = store.spec, store.chunk
    else:
        spec = with_attractors(spec, out)
        store = ZarrStore(out, spec, chunk, overwrite) if out is not None else MemoryStore(spec, chunk)
    tiles = spec.tiles(chunk)
    done = store.done_tiles()
    todo = [t for t in tiles if (t.iy, t.ix) not in done]
    run = MapRun(spec, store, tiles=len(tiles), skipped=len(tiles) - len(todo))
    t0 = time.perf_counter()
    if progress is not None:
        progress(run, None, None)
    if not todo:
        return run
    with (contextlib.nullcontext(client) if client is not None
          else dask_client(scheduler, workers, processes)) as c:
        from dask.distributed import as_completed

        info = c.scheduler_info()
        run.workers = sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values())
        run.scheduler = str(info.get("address", ""))
        [spec_f] = c.scatter([spec], broadcast=True, hash=False)
        futures = [c.submit(_evaluate, spec_f, t, device, retries=retries, pure=False,
                            key=f"map-tile-{t.iy}-{t.ix}-{os.urandom(4).hex()}") for t in todo]
        tile_of = {f.key: t for f, t in zip(futures, todo)}
        pending = as_completed(futures, loop=c.loop)
        try:
            for fut in pending:
                if stop is not None and stop.is_set():
                    run.stopped = True
                    break
                try:
                    values, secs = fut.result()
                except Exception as e:
                    t = tile_of[fut.key]
                    raise SweepError(f"tile rows {t.y0}:{t.y1}, columns {t.x0}:{t.x1} failed after "
                                     f"{retries} retries: {type(e).__name__}: {e}") from None
                tile = tile_of[fut.key]
                run.retried += _retries_used(c, [fut.key], retries).get(fut.key, 0)
                store.write(tile, values)
                fut.release()
                run.computed += 1
                run.tile_seconds.append(secs)
                if progress is not None:
                    progress(run, tile, values)
        finally:
            if run.computed + run.skipped < run.tiles:
                for f in futures:
                    if not f.done():
                        f.cancel()
                if stop is not None and stop.is_set():
                    run.stopped = True
            c.cancel(spec_f)
    run.seconds = time.perf_counter() - t0
    return run

