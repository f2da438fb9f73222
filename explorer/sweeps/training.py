"""Hyperparameter sweeps of ``train dsr`` as Dask tasks (``dynamics-explorer sweep-train``).

A sweep is the product models x latent sizes x seeds; each combination is one task that runs
exactly ``dynamics-explorer train dsr`` (:func:`explorer.cli.train_dsr`, same arguments, same
code) with ``--model``, ``--latent``, ``--seed`` and ``--out DIR/NAME.pt``, and writes the
checkpoint and its JSON summary ``DIR/NAME.json``. A combination whose summary exists is not
run again, so a stopped sweep resumes. At the end ``DIR/results.csv`` holds one row per run
(the final D_stsp, D_H, the verdict, the time), which :func:`results_table` also returns.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..core.errors import ParameterError
from .engine import SweepError, dask_client

#: the flags the sweep sets itself (given in the forwarded arguments they would conflict)
OWN_FLAGS = ("--model", "--latent", "--seed", "--out", "--json")


@dataclass(frozen=True)
class TrainRun:
    """One combination of a sweep."""

    model: str
    latent: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.model}-M{self.latent}-s{self.seed}"


def combinations(models: Sequence[str], latents: Sequence[int], seeds: Sequence[int]) -> list[TrainRun]:
    models = [m.strip() for m in models if m.strip()]
    if not models or not latents or not seeds:
        raise ParameterError("a training sweep needs at least one model, latent size and seed")
    if any(int(m) < 1 for m in latents):
        raise ParameterError(f"latent sizes must be positive, got {list(latents)}")
    return [TrainRun(m, int(L), int(s)) for m, L, s in itertools.product(models, latents, seeds)]


def _task(argv: list[str]) -> dict[str, Any]:
    """One ``train dsr`` (runs on a worker): parse the arguments exactly as the CLI does."""
    import torch

    from ..cli import build_parser, train_dsr

    from .engine import _limit_threads
    _limit_threads()
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    summary, out, verdict = train_dsr(args)
    summary["wall_seconds"] = round(time.perf_counter() - t0, 3)
    summary["torch_threads"] = torch.get_num_threads()
    return json.loads(json.dumps(summary, default=_number))


def _number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def run_training_sweep(runs: Sequence[TrainRun], train_args: Sequence[str], out_dir: str | os.PathLike, *,
                       client=None, scheduler: str | None = None, workers: int | None = None,
                       processes: bool = False,
                       progress: Callable[[TrainRun, dict, int, int], None] | None = None) -> list[dict]:
    """Run every combination not yet done as a Dask task; returns the table's rows (also
    written to ``out_dir/results.csv``). ``train_args``: the other ``train dsr`` arguments
    (``--system lorenz63 --steps 2000 ...``)."""
    out = Path(out_dir)
    if not out.parent.exists():
        raise ParameterError(f"directory {str(out.parent)!r} does not exist")
    for flag in OWN_FLAGS:
        if any(a == flag or a.startswith(flag + "=") for a in train_args):
            raise ParameterError(f"{flag} is set by the sweep for each run; leave it out of the "
                                 "train dsr arguments")
    out.mkdir(exist_ok=True)
    todo = [r for r in runs if not (out / f"{r.name}.json").exists()]
    argvs = {r: ["train", "dsr", *train_args, "--model", r.model, "--latent", str(r.latent),
                 "--seed", str(r.seed), "--out", str(out / f"{r.name}.pt"), "--quiet"] for r in todo}
    if todo:
        from ..cli import build_parser
        build_parser().parse_args(argvs[todo[0]])          # a bad argument fails here, once
        from contextlib import nullcontext
        with (nullcontext(client) if client is not None
              else dask_client(scheduler, workers, processes)) as c:
            from dask.distributed import as_completed
            futures = {c.submit(_task, argvs[r], pure=False, retries=1,
                                key=f"train-{r.name}-{os.urandom(4).hex()}"): r for r in todo}
            done = 0
            for fut in as_completed(list(futures), loop=c.loop):
                r = futures[fut]
                try:
                    summary = fut.result()
                except Exception as e:
                    raise SweepError(f"training run {r.name} failed: {type(e).__name__}: {e}") from None
                summary.update(model=r.model, latent=r.latent, seed=r.seed)
                tmp = out / f"{r.name}.json.tmp"
                tmp.write_text(json.dumps(summary))
                os.replace(tmp, out / f"{r.name}.json")
                done += 1
                if progress is not None:
                    progress(r, summary, done, len(todo))
    rows = results_table(runs, out)
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def results_table(runs: Sequence[TrainRun], out_dir: str | os.PathLike) -> list[dict]:
    """One row per run from its summary: model, latent, seed, steps, seconds, and the
    verdict's free-run D_stsp and D_H and whether the model reconstructs the system."""
    rows = []
    for r in runs:
        s = json.loads((Path(out_dir) / f"{r.name}.json").read_text())
        v = s.get("verdict") or {}
        rows.append({"run": r.name, "model": r.model, "latent": r.latent, "seed": r.seed,
                     "steps": s.get("steps"), "seconds": s.get("seconds"), "status": s.get("status"),
                     "d_stsp": v.get("d_stsp"), "d_h": v.get("d_h"),
                     "reconstructs": v.get("reconstructs"), "checkpoint": s.get("out")})
    return rows
