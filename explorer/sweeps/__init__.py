"""Parameter maps at any scale: tiles of a :class:`~explorer.core.analysis.parameter_maps.MapSpec`
as Dask tasks, stored in Zarr as they finish, resumable (:mod:`.engine`, :mod:`.store`), and
hyperparameter sweeps of ``train dsr`` (:mod:`.training`)."""

from .engine import (DEFAULT_CHUNK, MapRun, SweepError, dask_client, run_map, shared_client,
                     with_attractors)
from .store import MemoryStore, StoreError, ZarrStore, map_png, open_map, zipped

__all__ = ["DEFAULT_CHUNK", "MapRun", "SweepError", "dask_client", "run_map", "shared_client",
           "with_attractors", "MemoryStore", "StoreError", "ZarrStore", "map_png", "open_map", "zipped"]
