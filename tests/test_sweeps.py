"""Parameter maps on Dask (explorer.sweeps): chunked equals one call, Zarr stores, resume after
a kill, a worker killed mid-sweep, the CLI and an external scheduler."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from explorer.cli import main
from explorer.core.analysis.parameter_maps import Axis, MapSpec, Quantity
from explorer.core.registry import system_class
from explorer.sweeps import StoreError, open_map, run_map, zipped

pytestmark = pytest.mark.slow


def henon_map(quantity="lyapunov", n=(23, 11), **kw) -> MapSpec:
    return MapSpec(system_class("henon")(), Axis("a", 1.0, 1.4, n[0]), Quantity.parse(quantity),
                   y=Axis("b", -0.3, 0.3, n[1]), **kw)


def one_call(spec: MapSpec) -> np.ndarray:
    [tile] = spec.tiles(spec.n_points)
    out = spec.evaluate(tile)
    return out[0] if spec.y is None else out


def test_chunked_map_equals_one_call_value_for_value():
    import threading

    import torch

    def new_thread_count() -> int:          # what a thread started now begins with
        seen = []
        t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        t.start()
        t.join()
        return seen[0]

    threads, inherited = torch.get_num_threads(), new_thread_count()
    spec = henon_map(steps=800, transient=100)
    run = run_map(spec, chunk=17, workers=2)              # tiles of 17 points: pieces of rows
    # in-process tasks leave the process's count alone (new threads inherit the last one set;
    # earlier tests' page jobs may have set it, so compare with before, not with the main thread)
    assert torch.get_num_threads() == threads and new_thread_count() == inherited
    assert run.complete and run.computed == run.tiles == len(spec.tiles(17))
    got = run.dataset()["lyapunov"].values
    np.testing.assert_array_equal(got, one_call(spec))    # NaN where diverged, in both
    period = MapSpec(system_class("logistic")(), Axis("r", 2.9, 3.9, 37), Quantity.parse("period"))
    np.testing.assert_array_equal(run_map(period, chunk=5).dataset()["period"].values, one_call(period))


def test_store_records_coordinates_units_and_settings(tmp_path):
    spec = henon_map("spectrum", n=(6, 4), steps=200, transient=50)
    out = tmp_path / "map.zarr"
    run = run_map(spec, out, chunk=6, workers=1)
    assert run.summary()["store"] == str(out) and run.summary()["chunks_computed"] == 4
    ds = open_map(out).load()
    assert ds["spectrum"].dims == ("b", "a", "exponent")
    np.testing.assert_allclose(ds["a"].values, spec.x.values())
    assert ds["spectrum"].attrs["units"] == "1/iteration"
    assert ds.attrs["explorer_map"]["system"] == "henon"
    assert ds.attrs["explorer_map"]["axes"][1]["name"] == "b"
    assert int(ds["done"].sum()) == 4
    np.testing.assert_array_equal(ds["spectrum"].values, one_call(spec))
    again = run_map(spec, out, chunk=6, workers=1)        # complete: nothing computed
    assert again.computed == 0 and again.skipped == 4
    with pytest.raises(StoreError, match="different map"):
        run_map(henon_map("spectrum", n=(6, 4), steps=300, transient=50), out, chunk=6)
    with pytest.raises(StoreError, match="different map"):
        run_map(spec, out, chunk=12)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(StoreError, match="not a map store"):
        run_map(spec, plain)
    blob = zipped(open_map(out))
    import io
    import zipfile
    names = zipfile.ZipFile(io.BytesIO(blob)).namelist()
    assert "map.zarr/zarr.json" in names and any(n.startswith("map.zarr/spectrum/") for n in names)


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "explorer", *args]


def _done(out: Path) -> np.ndarray | None:
    import zarr
    try:
        return np.asarray(zarr.open_group(str(out), mode="r")["done"][...])
    except Exception:
        return None


def test_killed_sweep_resumes_without_touching_finished_chunks(tmp_path):
    out = tmp_path / "resume.zarr"
    args = ("sweep", "henon", "--x", "a=1.0:1.4:30", "--y", "b=-0.3:0.3:20", "--quantity", "spectrum",
            "--steps", "400", "--transient", "50", "--chunk", "15", "--workers", "1",
            "--out", str(out), "--quiet", "--json")
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    done = None
    try:
        while time.monotonic() < deadline:
            done = _done(out)
            if done is not None and done.sum() >= 8:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    done = _done(out)
    total = done.size
    assert 8 <= done.sum() < total, "the sweep must be stopped halfway for this test"
    finished = [(iy, ix) for iy, ix in np.argwhere(done == 1).tolist()]
    def chunk_files(iy, ix):
        return [out / "spectrum" / "c" / str(iy) / str(ix) / "0", out / "done" / "c" / str(iy) / str(ix)]
    stamps = {f: f.stat().st_mtime_ns for t in finished for f in chunk_files(*t)}
    assert all(f.exists() for f in stamps)
    time.sleep(0.05)
    res = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["complete"] and summary["chunks_resumed"] == len(finished)
    assert summary["chunks_computed"] == total - len(finished)
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps       # finished chunks untouched
    ds = open_map(out).load()
    assert int(ds["done"].sum()) == total
    spec = MapSpec(system_class("henon")(), Axis("a", 1.0, 1.4, 30), Quantity.parse("spectrum"),
                   y=Axis("b", -0.3, 0.3, 20), steps=400, transient=50)
    np.testing.assert_array_equal(ds["spectrum"].values, one_call(spec))


def test_a_worker_killed_mid_sweep_loses_only_its_chunk():
    from dask.distributed import Client, LocalCluster

    spec = henon_map("spectrum", n=(24, 10), steps=1500, transient=100)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        pids = client.run(os.getpid)
        victim = sorted(pids.values())[0]
        killed = []

        def kill_once(run, tile, values):
            if tile is not None and not killed:
                os.kill(victim, signal.SIGKILL)         # that worker is in the middle of a chunk
                killed.append(victim)

        run = run_map(spec, chunk=20, client=client, progress=kill_once)
    assert killed and run.complete
    assert run.retried >= 1                             # the killed worker's chunk ran again
    np.testing.assert_array_equal(run.dataset()["spectrum"].values, one_call(spec))


def test_cli_summary_and_one_line_errors(tmp_path, capsys):
    out = tmp_path / "m.zarr"
    rc = main(["sweep", "logistic", "--x", "r=3.4:4.0:16", "--quantity", "lyapunov", "--steps", "2000",
               "--chunk", "4", "--workers", "1", "--out", str(out), "--json", "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["shape"] == [16] and summary["chunks"] == 4 and summary["complete"]
    assert summary["store"] == str(out) and summary["chunks_retried"] == 0
    lam = open_map(out)["lyapunov"].values
    assert lam[-1] == pytest.approx(np.log(2), abs=0.05)
    for bad, message in [(["--x", "r=1:2"], "NAME=LO:HI:N"),
                         (["--x", "q=1:2:3"], "no parameter or variable 'q'"),
                         (["--x", "r=1:2:3", "--log", "y"], "--log y needs a --y"),
                         (["--x", "r=1:2:3", "--quantity", "colour"], "unknown quantity")]:
        argv = ["sweep", "logistic", "--quantity", "lyapunov", "--out", str(tmp_path / "x.zarr")] + bad
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main(["sweep", "logistic", "--x", "r=3:4:3", "--quantity", "lyapunov", "--out",
                 str(tmp_path / "x.npz")]) == 2
    assert ".zarr" in capsys.readouterr().err
    assert main(["sweep", "logistic", "--x", "r=3.4:4.0:16", "--quantity", "period", "--out", str(out)]) == 2
    assert "different map" in capsys.readouterr().err


def test_cli_attaches_to_a_running_scheduler(tmp_path, capsys, monkeypatch):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=":0", silence_logs=40) as cluster:
        monkeypatch.setenv("EXPLORER_DASK_SCHEDULER", cluster.scheduler_address)
        rc = main(["sweep", "logistic", "--x", "r=3.5:3.6:8", "--quantity", "period", "--chunk", "4",
                   "--out", str(tmp_path / "p.zarr"), "--json", "--quiet"])
        assert rc == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["scheduler"] == cluster.scheduler_address and summary["complete"]
    monkeypatch.setenv("EXPLORER_DASK_SCHEDULER", "not-an-address")
    assert main(["sweep", "logistic", "--x", "r=3.5:3.6:8", "--quantity", "period",
                 "--out", str(tmp_path / "q.zarr")]) == 2
    assert "tcp://HOST:PORT" in capsys.readouterr().err


def test_training_sweep_runs_each_combination_once_and_tabulates(tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["sweep-train", "--models", "shplrnn,alrnn", "--latent", "3", "--seeds", "0", "--workers", "2",
            "--out", str(out), "--json", "--quiet", "--", "--system", "lorenz63", "--steps", "30",
            "--length", "2000", "--metrics-every", "30"]
    assert main(argv) == 0
    table = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in table["runs"]] == ["shplrnn-M3-s0", "alrnn-M3-s0"]
    assert all(r["steps"] == 30 and r["d_stsp"] is not None for r in table["runs"])
    assert (out / "results.csv").read_text().splitlines()[0].startswith("run,model,latent,seed")
    from explorer.training.checkpoint import load_checkpoint
    ckpt = load_checkpoint(out / "alrnn-M3-s0.pt")
    assert ckpt is not None
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    assert main(argv) == 0                                   # done already: nothing retrained
    capsys.readouterr()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert main(argv[:-2] + ["--seed", "4"]) == 2
    assert "set by the sweep" in capsys.readouterr().err
