"""Training: data validation and loading, GTF identities, gradient control, the trainer loop,
rollback on divergence, and exact checkpoint round trips."""

from __future__ import annotations

import math
import os
import threading

import numpy as np
import pytest
import torch

from explorer.core.errors import (
    ExplorerError,
    ParameterError,
    ShapeError,
    SizeLimitError,
)
from explorer.core.registry import get_system
from explorer.models import (
    ALRNN,
    PLRNN,
    ALRNNConfig,
    PLRNNConfig,
    ShallowPLRNN,
    ShallowPLRNNConfig,
)
from explorer.training import (
    AdaptiveAlpha,
    CheckpointError,
    DataError,
    Rollout,
    Trainer,
    TrainerConfig,
    TrainEvent,
    TrainingDivergedError,
    force,
    from_array,
    from_file,
    from_system,
    gtf_rollout,
    jacobian_norm_bound,
    load_checkpoint,
    load_timeseries,
    optimal_alpha,
    prediction_error,
    sample_windows,
    save_checkpoint,
)
from explorer.training import trainer as trainer_module


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def lorenz():
    """Lorenz-63 with 5 % observation noise (the reference setting), 20,000 samples."""
    return from_system(get_system("lorenz63"), steps=20_000, transient=1000, generator=_gen(0))


SMALL = TrainerConfig(hidden_dim=20, seq_len=30, batch_size=4, metrics_every=0, steps=1000)


# ----------------------------------------------------------------------------- data
def test_from_system_is_standardised_noisy_and_carries_metadata(lorenz):
    assert lorenz.x.shape == (20_001, 3) and lorenz.x.dtype == torch.float32
    torch.testing.assert_close(lorenz.x.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(lorenz.x.std(0), torch.ones(3), atol=1e-4, rtol=0)
    assert lorenz.dt == 0.01 and lorenz.variables == ("x", "y", "z") and lorenz.source == "lorenz63"
    assert lorenz.lyapunov == pytest.approx(0.9056)
    # the noise is 5 % of each coordinate's standard deviation
    noise = (lorenz.x - lorenz.reference).double().std(0)
    torch.testing.assert_close(noise, torch.full((3,), 0.05, dtype=torch.float64), atol=3e-3, rtol=0)
    # denormalisation returns data units
    raw = lorenz.raw()
    assert raw[:, 2].mean() == pytest.approx(23.5, abs=1.5)
    # explicit generator: reproducible
    again = from_system(get_system("lorenz63"), steps=20_000, transient=1000, generator=_gen(0))
    assert torch.equal(again.x, lorenz.x)
    sub = from_system(get_system("lorenz63"), steps=1000, save_every=5, noise=0.0, observe=[0, 2])
    assert sub.x.shape == (201, 2) and sub.dt == pytest.approx(0.05) and sub.variables == ("x", "z")
    assert sub.reference is None


def test_from_array_validates_with_typed_errors():
    ok = np.random.default_rng(0).normal(size=(100, 2))
    ts = from_array(ok)
    assert ts.x.shape == (100, 2) and ts.variables == ("x1", "x2")
    torch.testing.assert_close(ts.raw(), torch.from_numpy(ok))
    with pytest.raises(ShapeError):
        from_array(np.zeros((10, 10, 2)))
    bad = ok.copy()
    bad[17, 1] = np.nan
    with pytest.raises(DataError, match="row 17, column 1"):
        from_array(bad)
    with pytest.raises(DataError, match="fewer"):
        from_array(ok[:5])
    with pytest.raises(DataError, match="transposed"):
        from_array(ok.T)
    with pytest.raises(SizeLimitError):
        from_array(ok, max_values=50)
    const = ok.copy()
    const[:, 0] = 3.0
    with pytest.raises(DataError, match="constant"):
        from_array(const)
    with pytest.raises(DataError):
        from_array(np.array([["a", "b"]] * 30))
    assert issubclass(DataError, ExplorerError)


def test_load_timeseries_formats(tmp_path):
    x = np.random.default_rng(1).normal(size=(40, 3))
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", x=x, other=np.zeros(3))
    np.savez(tmp_path / "c.npz", series=x)
    np.savetxt(tmp_path / "d.csv", x, delimiter=",", header="u,v,w", comments="")
    np.savetxt(tmp_path / "e.txt", x)                                  # whitespace separated
    (tmp_path / "f.csv").write_text("# comment\n" + "\n".join(";".join(str(float(v)) for v in r) for r in x))
    for name in ("a.npy", "b.npz", "c.npz", "d.csv", "e.txt", "f.csv"):
        np.testing.assert_allclose(load_timeseries(tmp_path / name), x, rtol=1e-15, err_msg=name)
    assert from_file(tmp_path / "d.csv").variables == ("u", "v", "w")


def test_load_timeseries_reports_malformed_files(tmp_path):
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5,6\n7,8\n")
    with pytest.raises(DataError, match="line 3: 2 values, expected 3"):
        load_timeseries(tmp_path / "ragged.csv")
    (tmp_path / "word.csv").write_text("a,b\n1,2\n3,x\n")
    with pytest.raises(DataError, match="line 3: 'x' is not a number"):
        load_timeseries(tmp_path / "word.csv")
    (tmp_path / "empty.csv").write_text("# nothing\n")
    with pytest.raises(DataError, match="no numeric rows"):
        load_timeseries(tmp_path / "empty.csv")
    np.save(tmp_path / "t.npy", np.zeros((50, 2)))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:60])                        # truncated
    with pytest.raises(DataError):
        load_timeseries(tmp_path / "t.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError):                                     # never unpickled
        load_timeseries(tmp_path / "obj.npy")
    np.savez(tmp_path / "many.npz", a=np.zeros(3), b=np.zeros(3))
    with pytest.raises(DataError, match="store the series as 'x'"):
        load_timeseries(tmp_path / "many.npz")
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(DataError, match="unknown file type"):
        load_timeseries(tmp_path / "x.json")
    with pytest.raises(DataError, match="no such file"):
        load_timeseries(tmp_path / "missing.csv")
    with pytest.raises(SizeLimitError):
        load_timeseries(tmp_path / "ragged.csv", max_bytes=4)


def test_oversized_files_are_refused_from_their_headers_before_any_data_is_read(tmp_path):
    import tracemalloc
    import zipfile

    def npy_header(shape) -> bytes:
        import io
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                                   "shape": shape})
        return buf.getvalue()

    # a 100-byte NPZ whose header promises 10^10 values (a "zip bomb" without the work)
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", npy_header((5_000_000_000, 2)) + b"\0" * 64)
    # an NPZ whose member really unpacks to 48 MB of zeros (from 50 kB)
    with zipfile.ZipFile(tmp_path / "zeros.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            f.write(npy_header((3_000_000, 2)))
            for _ in range(48):
                f.write(bytes(1_000_000))
    np.save(tmp_path / "cube.npy", np.zeros((4, 5, 6)))
    (tmp_path / "big.csv").write_text("1.5,2.5,3.5\n" * 40_000)       # 120,000 values
    tracemalloc.start()
    try:
        with pytest.raises(SizeLimitError, match="10,000,000,000 values, over the limit"):
            load_timeseries(tmp_path / "bomb.npz")
        with pytest.raises(SizeLimitError, match="would decompress to 45.8 MiB"):
            load_timeseries(tmp_path / "zeros.npz", max_values=1_000_000)
        with pytest.raises(ShapeError, match=r"\(4, 5, 6\)"):
            load_timeseries(tmp_path / "cube.npy")
        with pytest.raises(SizeLimitError, match="more than 100,000 values"):
            from_file(tmp_path / "big.csv", max_values=100_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20                # refusals cost no more than a block of CSV lines
    assert load_timeseries(tmp_path / "big.csv").shape == (40_000, 3)    # under the limit


def test_sample_windows_are_contiguous_and_reproducible(lorenz):
    w = sample_windows(lorenz.x, 11, 5, generator=_gen(3))
    assert w.shape == (11, 5, 3)
    for b in range(5):
        start = int(torch.nonzero((lorenz.x == w[0, b]).all(1))[0])
        assert torch.equal(w[:, b], lorenz.x[start:start + 11])
    assert torch.equal(w, sample_windows(lorenz.x, 11, 5, generator=_gen(3)))
    with pytest.raises(ParameterError):
        sample_windows(lorenz.x[:5], 11, 2)


# ----------------------------------------------------------------------------- GTF identities
def test_alpha_one_is_teacher_forcing_and_alpha_zero_free_running(lorenz):
    x = sample_windows(lorenz.x, 21, 4, generator=_gen(1))            # (T+1, B, N)
    m = ShallowPLRNN(ShallowPLRNNConfig(hidden_dim=16), generator=_gen(2))
    with torch.no_grad():
        tf = gtf_rollout(m, x, 1.0).predictions
        torch.testing.assert_close(tf, m.step(x[:-1]))                # one-step predictions
        free = gtf_rollout(m, x, 0.0).predictions
        torch.testing.assert_close(free, m.forward(x[0], 20))
        # sparse forcing: tau = 1 is full forcing, tau > T is free running
        torch.testing.assert_close(gtf_rollout(m, x, tau=1).predictions, tf)
        torch.testing.assert_close(gtf_rollout(m, x, tau=50).predictions, free)
        # in between, the state is the convex combination of prediction and data
        z = m.step(x[0])
        torch.testing.assert_close(force(m, z, x[1], 0.3), 0.7 * z + 0.3 * x[1])


def test_forcing_with_hidden_units_and_linear_observation(lorenz):
    x = sample_windows(lorenz.x, 16, 3, generator=_gen(4))
    m = PLRNN(PLRNNConfig(latent_dim=5), generator=_gen(5))
    with torch.no_grad():
        z = m.init_state(x[0])
        preds = []
        for t in range(1, 16):                                         # alpha = 1 by hand
            z = m.step(z)
            preds.append(z[:, :3])
            z = torch.cat([x[t], z[:, 3:]], -1)                        # only observed units forced
        torch.testing.assert_close(gtf_rollout(m, x, 1.0).predictions, torch.stack(preds))
        # a linear observation B = [I 0] forces exactly like the identity
        lin = PLRNN(PLRNNConfig(latent_dim=5, observation="linear"), generator=_gen(5))
        lin.load_state_dict(m.state_dict(), strict=False)
        torch.testing.assert_close(lin.B, torch.eye(3, 5))
        for a in (0.0, 0.4, 1.0):
            torch.testing.assert_close(gtf_rollout(lin, x, a).predictions,
                                       gtf_rollout(m, x, a).predictions)


def test_optimal_alpha_and_the_norm_bound():
    assert optimal_alpha(0.5) == 0.0 and optimal_alpha(1.0) == 0.0
    assert optimal_alpha(2.0) == pytest.approx(0.5)
    assert optimal_alpha(math.inf) == 1.0
    # W = 0: J = diag(A) everywhere, the bound is max |A|
    m = PLRNN(PLRNNConfig(obs_dim=2, latent_dim=3))
    with torch.no_grad():
        m.A.copy_(torch.tensor([0.5, -1.25, 0.9]))
        m.W.zero_()
    z = torch.randn(30, 4, 3, generator=_gen())
    assert jacobian_norm_bound(m, z) == pytest.approx(1.25, rel=1e-6)
    # adaptive: jumps up to a larger estimate, decays towards a smaller one
    ad = AdaptiveAlpha(0.1, every=2, decay=0.9)
    assert ad.update(m, z) == pytest.approx(0.2)                       # 1 - 1/1.25
    assert ad.update(m, z) == pytest.approx(0.2)                       # not due: unchanged
    with torch.no_grad():
        m.A.copy_(torch.tensor([0.5, 0.5, 0.5]))
    assert ad.update(m, z) == pytest.approx(0.9 * 0.2)                 # estimate 0: decay


def _expanding_model(x: torch.Tensor) -> ShallowPLRNN:
    """A clipped shPLRNN fitted to Lorenz-63 one-step maps by least squares on random ReLU
    features (A fixed at 0.95): bounded, with Jacobian norms > 1 along the data."""
    H = 100
    m = ShallowPLRNN(ShallowPLRNNConfig(hidden_dim=H, clipped=True), generator=_gen(1)).double()
    xd = x.double()
    with torch.no_grad():
        u = xd[:-1] @ m.W2.T
        feats = torch.cat([torch.relu(u + m.h2) - torch.relu(u), torch.ones(len(u), 1,
                                                                            dtype=u.dtype)], 1)
        m.A.fill_(0.95)
        target = xd[1:] - 0.95 * xd[:-1]
        sol = torch.linalg.solve(feats.T @ feats + 1e-6 * torch.eye(H + 1, dtype=u.dtype),
                                 feats.T @ target)                     # (H + 1, 3)
        m.W1.copy_(sol[:-1].T)
        m.h1.copy_(sol[-1])
    return m.float()


def test_gtf_keeps_gradients_bounded_on_chaotic_data(lorenz):
    m = _expanding_model(lorenz.reference)
    w = sample_windows(lorenz.x, 801, 8, generator=_gen(3))           # (801, 8, 3)
    bound = jacobian_norm_bound(m, lorenz.x[:2000].unsqueeze(1))
    assert bound > 1.05                                                # expanding along the data
    alpha = optimal_alpha(bound)

    def grad_norm(T, a):
        m.zero_grad()
        x = w[: T + 1]
        gtf_rollout(m, x, a).loss(x).backward()
        return float(torch.sqrt(sum((p.grad ** 2).sum() for p in m.parameters())))

    lengths = (10, 100, 400, 800)
    free = [grad_norm(T, 0.0) for T in lengths]
    gtf = [grad_norm(T, alpha) for T in lengths]
    # free running: the gradient grows by orders of magnitude with the sequence length
    # (until the bounded model saturates); with GTF at alpha* it stays O(1)
    assert max(free[1:]) > 1e3 * free[0]
    assert max(gtf) < 5 and gtf[-1] <= 2 * gtf[0]


def test_prediction_error_is_zero_for_the_generating_model():
    truth = ALRNN(ALRNNConfig(obs_dim=3, latent_dim=3, n_relu=1), generator=_gen(6))
    with torch.no_grad():                                              # a rotation-like orbit
        truth.A.copy_(torch.tensor([0.99, 0.99, 0.9]))
        truth.W.copy_(torch.tensor([[0.0, -0.1, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 0.05]]))
        truth.h.copy_(torch.tensor([0.0, 0.0, 0.1]))
        z = truth.forward(torch.tensor([1.0, 0.0, 0.5]), 500)         # (500, 3)
    assert prediction_error(truth, z, 20) == pytest.approx(0.0, abs=1e-10)
    other = ALRNN(ALRNNConfig(obs_dim=3, latent_dim=3, n_relu=1), generator=_gen(7))
    assert prediction_error(other, z, 20) > 1e-3


# ----------------------------------------------------------------------------- trainer
def test_trainer_steps_reduce_the_loss_and_record_history(lorenz):
    tr = Trainer(lorenz, SMALL.replace(lr=1e-2, lr_end=1e-4, alpha_mode="fixed", alpha=0.3))
    first = tr.step()
    assert set(first) == {"loss", "grad_norm", "alpha", "lr"}
    assert first["lr"] == pytest.approx(1e-2) and first["alpha"] == 0.3
    for _ in range(149):
        tr.step()
    assert tr.step_count == 150 and len(tr.history["loss"]) == 150
    assert np.mean(tr.history["loss"][-20:]) < 0.3 * np.mean(tr.history["loss"][:20])
    assert tr.lr_at(1000) == pytest.approx(1e-4) and tr.lr_at(500) == pytest.approx(1e-3)


@pytest.mark.parametrize("changes", [
    {"model": "plrnn", "latent_dim": 6},
    {"model": "alrnn", "latent_dim": 8, "n_relu": 2, "alpha_mode": "sparse", "tau": 5},
    {"model": "shplrnn", "clipped": True, "alpha_mode": "fixed", "alpha": 0.3, "optimizer": "adam"},
    {"model": "alrnn", "latent_dim": 6, "observation": "linear"},
])
def test_every_model_and_forcing_mode_trains(lorenz, changes):
    tr = Trainer(lorenz, SMALL.replace(metrics_every=5, metric_length=300, metric_runs=2, **changes))
    ev = tr.run(5)
    assert ev.status == "done" and ev.step == 5 and ev.metrics is not None
    assert set(ev.metrics) >= {"d_stsp", "d_h", "pe", "d_stsp_clean", "d_h_clean"}
    assert all(np.isfinite(v) for v in ev.losses.values())


def test_run_emits_events_stops_and_resumes(lorenz):
    tr = Trainer(lorenz, SMALL.replace(metrics_every=4, metric_length=500, metric_runs=3,
                                       lyapunov=True))
    events: list[TrainEvent] = []
    stop = threading.Event()

    def cb(ev):
        events.append(ev)
        if len(events) == 6:
            stop.set()

    last = tr.run(100, callbacks=[cb], stop=stop)
    assert last.status == "stopped" and last.step == 6 == tr.step_count
    assert [e.step for e in events[:6]] == [1, 2, 3, 4, 5, 6]
    assert events[3].metrics is not None and events[2].metrics is None
    m = events[3].metrics
    assert m["lyapunov_data"] == pytest.approx(0.9056) and "lyapunov" in m
    assert all(e.eta is not None and e.eta >= 0 for e in events[:6])
    assert tr.best["step"] == 4 and len(tr.metric_history) == 1
    # snapshots are detached copies
    snap = events[0].snapshot
    with torch.no_grad():
        tr.model.h1.add_(1.0)
    assert not torch.equal(snap["h1"], tr.model.h1)
    with torch.no_grad():
        tr.model.h1.sub_(1.0)
    stop.clear()
    last = tr.run(2, callbacks=[cb])                                   # resume = run again
    assert last.status == "done" and last.step == 8
    assert events[-1].metrics is not None                              # step 8
    assert tr.best_model().state_dict().keys() == tr.model.state_dict().keys()


def test_injected_nan_is_skipped_and_repeated_nans_roll_back_and_end_the_run(lorenz, monkeypatch):
    tr = Trainer(lorenz, SMALL.replace(max_bad_steps=3))
    start = {k: v.clone() for k, v in tr.model.state_dict().items()}      # the first snapshot
    tr.run(3)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    opt_before = tr.optimizer.state_dict()["state"][0]["exp_avg"].clone()
    real = trainer_module.gtf_rollout

    def poisoned(*a, **kw):
        r = real(*a, **kw)
        return Rollout(r.predictions * float("nan"), r.states)

    monkeypatch.setattr(trainer_module, "gtf_rollout", poisoned)
    out = tr.step()                                                    # one bad batch: skipped
    assert out["skipped"] == 1.0 and tr.step_count == 3 and tr.skipped == 1
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, before[k])
    assert torch.equal(tr.optimizer.state_dict()["state"][0]["exp_avg"], opt_before)
    assert len(tr.history["loss"]) == 3
    with pytest.raises(TrainingDivergedError) as info:                 # the third in a row
        tr.step()
        tr.step()
    assert info.value.step == 4 and "loss" in info.value.reason
    assert "3 batches in a row" in str(info.value) and "(step 0) was restored" in str(info.value)
    for k, v in tr.model.state_dict().items():                        # the last snapshot
        assert torch.equal(v, start[k])
    ev = tr.run(10)
    assert ev.status == "diverged" and ev.step == 3 and "step 4" in ev.message
    assert ev.skipped == 6 and "6 skipped in all" in ev.message
    monkeypatch.setattr(trainer_module, "gtf_rollout", real)

    # non-finite weights after an update: back to the last snapshot, counted, training goes on
    tr = Trainer(lorenz, SMALL)
    start = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.run(3)
    orig_step = tr.optimizer.step

    def bad_step(*a, **kw):
        orig_step(*a, **kw)
        with torch.no_grad():
            tr.model.A.fill_(float("inf"))

    monkeypatch.setattr(tr.optimizer, "step", bad_step)
    assert tr.step()["skipped"] == 1.0 and tr.rollbacks == 1
    assert "non-finite" in tr.last_problem
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, start[k])
    assert tr.optimizer.state_dict()["state"] == {}                   # as at step 0
    monkeypatch.setattr(tr.optimizer, "step", orig_step)
    tr.step()                                                          # training goes on
    assert tr.step_count == 4

    # an exploding gradient: skipped; with max_bad_steps=1 it ends the run at once
    tr2 = Trainer(lorenz, SMALL.replace(explode_norm=1e-8))
    assert tr2.step()["skipped"] == 1.0 and "exploding" in tr2.last_problem
    tr3 = Trainer(lorenz, SMALL.replace(explode_norm=1e-8, max_bad_steps=1))
    with pytest.raises(TrainingDivergedError, match="exploding"):
        tr3.step()
    assert tr3.step_count == 0


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_is_exact(lorenz, tmp_path):
    tr = Trainer(lorenz, SMALL.replace(metrics_every=3, metric_length=300, metric_runs=2))
    tr.run(6)
    path = tr.save(tmp_path / "run.pt")
    ck = load_checkpoint(path)
    for k, v in tr.model.state_dict().items():
        assert torch.equal(ck.model_state[k], v)
    assert ck.trainer_config == tr.config.as_dict()
    assert torch.equal(ck.normalisation.mean, lorenz.normalisation.mean)
    assert ck.history["metrics"] == tr.metric_history
    assert torch.equal(ck.data.x, lorenz.x) and torch.equal(ck.data.reference, lorenz.reference)
    model = ck.model()
    z = torch.randn(5, 3, generator=_gen())
    torch.testing.assert_close(model.step(z), tr.model.step(z), rtol=0, atol=0)
    a, b = ck.optimizer_state, tr.optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i, st in b["state"].items():
        for key, v in st.items():
            assert torch.equal(a["state"][i][key], v)


def test_resumed_trainer_continues_the_same_curves(lorenz, tmp_path):
    cfg = SMALL.replace(metrics_every=4, metric_length=300, metric_runs=2)
    straight = Trainer(lorenz, cfg)
    straight.run(8)
    first = Trainer(lorenz, cfg)
    first.run(4)
    first.save(tmp_path / "half.pt", include_data=False)
    with pytest.raises(ParameterError, match="without its data"):
        Trainer.load(tmp_path / "half.pt")
    resumed = Trainer.load(tmp_path / "half.pt", lorenz)
    resumed.run(4)
    assert resumed.history == straight.history
    assert resumed.metric_history == straight.metric_history
    for k, v in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v)


def test_version_1_checkpoints_still_load_and_other_tasks_are_refused(lorenz, tmp_path):
    from explorer.training import (
        CheckpointMismatchError,
        LoopConfig,
        Task,
        TrainingLoop,
    )

    tr = Trainer(lorenz, SMALL)
    tr.run(4)
    path = tr.save(tmp_path / "v2.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["version"] == 2 and raw["task"]["name"] == "gtf"
    assert raw["model"]["kind"] == "shplrnn" and raw["trainer_state"]["step_count"] == 4
    # the version 1 layout: no task/model records, RNG and forcing state in trainer_state
    v1 = {k: v for k, v in raw.items() if k not in ("task", "model", "task_state", "loop_config")}
    v1["version"] = 1
    v1["trainer_state"] = {**raw["trainer_state"], **raw["task_state"]}
    for k in ("skipped", "rollbacks"):
        del v1["trainer_state"][k]
    torch.save(v1, tmp_path / "v1.pt")
    old = Trainer.load(tmp_path / "v1.pt")
    assert old.step_count == 4 and old.history == tr.history
    tr.run(3)
    old.run(3)
    for k, v in tr.model.state_dict().items():
        assert torch.equal(old.model.state_dict()[k], v)

    class Other(Task):
        name = "mlp-regression"

        def __init__(self):
            self.model = torch.nn.Linear(3, 3)

        def loss(self, model, step):
            return model(torch.ones(2, 3)).pow(2).mean()

    loop = TrainingLoop(Other(), LoopConfig())
    loop.run(2)
    loop.save(tmp_path / "other.pt")
    with pytest.raises(CheckpointMismatchError, match="'mlp-regression' checkpoint, not a reconstruction"):
        Trainer.load(tmp_path / "other.pt")
    with pytest.raises(CheckpointMismatchError, match="'gtf' checkpoint, not 'mlp-regression'"):
        loop.restore(path)


def test_interrupted_save_keeps_the_previous_checkpoint(lorenz, tmp_path, monkeypatch):
    tr = Trainer(lorenz, SMALL)
    tr.run(2)
    path = tr.save(tmp_path / "ck.pt")
    good = load_checkpoint(path).model_state
    tr.run(2)

    def crash(obj, f, *a, **kw):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        tr.save(path)
    monkeypatch.undo()
    again = load_checkpoint(path).model_state
    for k, v in good.items():
        assert torch.equal(again[k], v)
    assert sorted(os.listdir(tmp_path)) == ["ck.pt"]                   # no temporary left


def test_load_refuses_code_and_foreign_files(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": "dynamics-explorer/checkpoint", "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "evil.pt")
    msg = str(info.value)            # one line of ours, not PyTorch's advice to load it unsafely
    assert msg.startswith("evil.pt is refused") and "posix.system" in msg
    assert "\n" not in msg and "weights_only" not in msg and len(msg) < 240
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a Dynamics Explorer checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "none.pt")
    # a bare model checkpoint (no trainer state) still gives its model
    m = PLRNN(PLRNNConfig(latent_dim=4), generator=_gen())
    save_checkpoint(tmp_path / "model.pt", m)
    torch.testing.assert_close(load_checkpoint(tmp_path / "model.pt").model().W, m.W)
    with pytest.raises(ParameterError, match="no trainer state"):
        Trainer.load(tmp_path / "model.pt")


def test_trainer_config_validation(lorenz):
    with pytest.raises(ParameterError):
        TrainerConfig(model="lstm")
    with pytest.raises(ParameterError):
        TrainerConfig(alpha_mode="sometimes")
    with pytest.raises(ParameterError):
        TrainerConfig(seq_len=0)
    with pytest.raises(ParameterError):
        TrainerConfig(lr=1e-3, lr_end=1e-2)
    with pytest.raises(ParameterError):
        TrainerConfig.from_dict({"model": "shplrnn", "colour": "red"})
    with pytest.raises(ParameterError, match="seq_len"):
        Trainer(from_array(np.random.default_rng(0).normal(size=(50, 3))), TrainerConfig())
    assert TrainerConfig.from_dict(SMALL.as_dict()) == SMALL


@pytest.mark.slow
def test_short_training_on_lorenz_reduces_the_state_space_divergence(lorenz):
    # reference settings (shPLRNN M=3, H=50, batch 16, T=200, RAdam 1e-3, adaptive GTF);
    # about 1,500 steps take 20-25 s on one CPU core
    tr = Trainer(lorenz, TrainerConfig(metrics_every=0, metric_runs=5, metric_length=4000))
    before = tr.evaluate()
    tr.run(1500)
    after = tr.evaluate()
    assert before["d_stsp"] > 5.0
    assert after["d_stsp"] < 0.5 * before["d_stsp"]
    assert after["d_stsp_clean"] < 0.5 * before["d_stsp_clean"]
    assert after["d_h"] < before["d_h"]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CI") == "true" and not os.environ.get("EXPLORER_LONG_TESTS"),
                    reason="a training-quality run of up to 12,000 steps (8-12 min on a 2-core CI "
                           "machine): CI leaves it to benchmarks/bench_training.py (time to "
                           "D_stsp < 0.3); EXPLORER_LONG_TESTS=1 runs it here")
def test_default_settings_reconstruct_lorenz_within_the_published_range():
    """Shallow PLRNN, default config, Lorenz-63 with 5 % observation noise: the state-space
    divergence against the noise-free trajectory goes below 0.3 (the GTF paper's model:
    about 0.26) and the power-spectrum distance below 0.1 within 12,000 steps (about 2
    minutes on this project's 2-core CPU; the run stops as soon as both hold)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = from_system(get_system("lorenz63"), steps=100_000, noise=0.05,
                           generator=torch.Generator().manual_seed(0))
        tr = Trainer(data, TrainerConfig())
        stop = threading.Event()
        seen = []

        def watch(ev):
            if ev.metrics:
                seen.append((ev.metrics["d_stsp_clean"], ev.metrics["d_h_clean"]))
                if seen[-1][0] < 0.3 and seen[-1][1] < 0.1:
                    stop.set()

        tr.run(12_000, callbacks=[watch], stop=stop)
    finally:
        torch.set_num_threads(threads)
    best = min(seen)
    assert best[0] < 0.3 and best[1] < 0.1, seen


# ----------------------------------------------------------------------------- verdict
from explorer.training import D_STSP_GOOD, metrics_verdict, reconstruction_verdict
from explorer.training.verdict import free_run_spread, judge


@pytest.fixture(scope="module")
def lorenz_truth():
    """Noise-free Lorenz-63 data (20,000 samples) and an independent stretch of the same
    attractor (another part of the trajectory), both in the data's standardisation."""
    sys_ = get_system("lorenz63")
    data = from_system(sys_, steps=20_000, transient=1000, noise=0.0)
    other = from_system(sys_, steps=20_000, transient=123_457, noise=0.0)
    return data.x, data.normalisation.apply(other.raw()).float()


def test_verdict_passes_the_true_systems_own_trajectory(lorenz_truth):
    x, other = lorenz_truth
    v = reconstruction_verdict(x, other)
    assert v.ok and v.kind == "reconstruction", v.line()
    assert v.d_stsp < 0.5 * D_STSP_GOOD and v.d_h < 0.1 and v.spread > 0.5
    assert v.line().startswith("reconstruction: D_stsp")
    # batched free runs (T, B, D) are pooled
    assert reconstruction_verdict(x, other[:20_000].reshape(4, 5000, 3).transpose(0, 1)).ok


def test_verdict_flags_a_constant_free_run(lorenz_truth):
    x, _ = lorenz_truth
    const = x.mean(0, keepdim=True).expand(5000, 3).clone()         # a model stuck at the mean
    v = reconstruction_verdict(x, const)
    assert not v.ok and v.kind == "fixed point" and v.spread < 1e-6
    assert v.line().startswith("not a reconstruction: the free run settles on a fixed point")
    assert "\n" not in v.line()


def test_verdict_flags_a_run_that_spirals_into_a_fixed_point(lorenz_truth):
    x, _ = lorenz_truth
    t = torch.arange(4000, dtype=torch.float32)
    decay = torch.exp(-t / 300)                                      # varied at first, then still
    spiral = torch.stack([decay * torch.cos(t / 10), decay * torch.sin(t / 10), 0.3 + 0 * t], -1)
    v = reconstruction_verdict(x, spiral)
    assert not v.ok and v.kind == "fixed point", v.line()


def test_verdict_flags_diverged_and_escaping_runs_and_a_wrong_attractor(lorenz_truth):
    x, other = lorenz_truth
    bad = other.clone()
    bad[100:] = float("nan")
    v = reconstruction_verdict(x, bad)
    assert not v.ok and v.kind == "diverged" and "NaN" in v.reason
    away = other + torch.linspace(0, 500, other.shape[0]).unsqueeze(-1)
    assert reconstruction_verdict(x, away).kind == "diverged"
    # a circle through the data's range: it moves, but not like the data
    t = torch.arange(5000, dtype=torch.float32)
    circle = torch.stack([torch.cos(t / 20), torch.sin(t / 20), torch.cos(t / 7)], -1)
    v = reconstruction_verdict(x, circle)
    assert not v.ok and v.kind == "poor match" and v.d_stsp > D_STSP_GOOD
    assert f"above {D_STSP_GOOD:g}" in v.reason


def test_verdict_from_metrics_prefers_the_noise_free_numbers():
    good = {"d_stsp": 1.4, "d_stsp_clean": 0.4, "d_h": 0.05, "d_h_clean": 0.03, "spread": 0.9,
            "escaped": 0.0}
    v = metrics_verdict(good)
    assert v.ok and v.reference == "noise-free reference" and v.d_stsp == 0.4
    assert not metrics_verdict({**good, "spread": 0.001}).ok
    assert metrics_verdict({**good, "spread": math.nan}).kind == "diverged"
    assert metrics_verdict({"d_stsp": 14.0, "d_h": 0.4}).kind == "poor match"
    assert judge(0.2, 0.05, 1.0).ok and not judge(0.2, 0.05, 1.0, escaped=True).ok
    d = metrics_verdict(good).as_dict()
    assert d["reconstructs"] is True and d["kind"] == "reconstruction" and d["d_stsp"] == 0.4


def test_trainer_evaluate_reports_spread_and_verdict(lorenz):
    tr = Trainer(lorenz, SMALL.replace(metric_length=500, metric_runs=2))
    m = tr.evaluate()
    assert {"spread", "escaped"} <= set(m) and m["escaped"] in (0.0, 1.0)
    v = tr.verdict(length=500, runs=2)
    assert not v.ok and v.reference == "noise-free reference"    # an untrained model
    assert free_run_spread(lorenz.x, lorenz.x) == pytest.approx(1.0, rel=0.2)
