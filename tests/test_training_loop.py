"""The model-agnostic training loop: a toy regression trains through it, pause/resume is exact,
checkpoints round-trip exactly and refuse other tasks and models, NaN batches are skipped and
counted, repeated NaNs end the run, rollback restores the last snapshot; and no seed of the
`train dsr` defaults ends a run at its start."""

from __future__ import annotations

import math
import os
import threading

import pytest
import torch

from explorer.core.errors import ExplorerError, ParameterError
from explorer.training import (
    CheckpointError,
    CheckpointMismatchError,
    LoopConfig,
    Task,
    TrainEvent,
    TrainingDivergedError,
    TrainingLoop,
    load_checkpoint,
    register_model,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Small-batch training on one torch thread (two are many times slower on a busy 2-core
    machine: OpenMP barriers wait for a descheduled peer; see docs/architecture.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Regression(Task):
    """Fit y = sin(x) on [-3, 3] with a small tanh MLP (full batch, deterministic)."""

    name = "mlp-regression"

    def __init__(self, width: int = 32, seed: int = 0, poison: set[int] | None = None):
        g = torch.Generator().manual_seed(123)
        self.x = torch.linspace(-3, 3, 256).unsqueeze(1)
        self.y = torch.sin(self.x) + 0.0 * torch.randn(256, 1, generator=g)
        torch.manual_seed(seed)
        self.width = width
        self.model = torch.nn.Sequential(torch.nn.Linear(1, width), torch.nn.Tanh(),
                                         torch.nn.Linear(width, width), torch.nn.Tanh(),
                                         torch.nn.Linear(width, 1))
        self.poison = poison or set()                 # calls of loss() (0-based) that give NaN
        self.calls = 0

    def loss(self, model, step):
        mse = torch.mean((model(self.x) - self.y) ** 2)
        if self.calls in self.poison:
            mse = mse * float("nan")
        self.calls += 1
        return mse, {"width": float(self.width)}

    def evaluate(self, model):
        return {"mse": float(torch.mean((model(self.x) - self.y) ** 2))}

    def config(self):
        return {"width": self.width}


def _loop(task=None, **cfg) -> TrainingLoop:
    return TrainingLoop(task or Regression(), LoopConfig(**{"lr": 1e-2, **cfg}))


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_toy_regression_trains_through_the_generic_loop():
    loop = _loop(eval_every=100, best_metric="mse", planned_steps=600)
    events: list[TrainEvent] = []
    first = loop.evaluate()["mse"]
    ev = loop.run(600, callbacks=[events.append])
    # a constant predictor scores Var(sin x) ~ 0.47 on [-3, 3]; an MLP of this size fits the
    # curve to ~1e-4 in 600 full-batch Adam steps, so 0.01 (2 % of the variance) has a margin
    assert first > 0.1
    assert ev.status == "done" and ev.step == 600 == loop.step_count
    assert loop.history["loss"][-1] < 0.01 and loop.metric_history[-1]["mse"] < 0.01
    assert [m["step"] for m in loop.metric_history] == [100, 200, 300, 400, 500, 600]
    assert loop.best["step"] == 600 and loop.best["mse"] == loop.metric_history[-1]["mse"]
    assert set(loop.history) == {"step", "loss", "grad_norm", "lr", "width"}
    assert all(len(v) == 600 for v in loop.history.values())
    assert loop.history["step"] == list(range(1, 601))
    assert events[99].metrics is not None and events[98].metrics is None
    assert all(e.eta is not None and e.eta >= 0 for e in events) and events[-1].eta == 0
    assert events[0].snapshot is None                  # generic loops: no per-event copies
    assert ev.skipped == 0 and ev.rollbacks == 0


def test_a_duck_typed_task_and_config_validation():
    class Bare:                                        # no Task base class: only what is needed
        name = "bare"
        model = torch.nn.Linear(2, 1)

        def loss(self, model, step):
            return model(torch.ones(4, 2)).pow(2).mean()

    loop = TrainingLoop(Bare(), LoopConfig(eval_every=2))
    assert loop.run(3).step == 3 and loop.metric_history == [{"step": 2}]
    for bad in ({"lr": 0}, {"max_bad_steps": 0}, {"snapshot_every": -1}, {"eval_every": 1.5},
                {"explode_norm": 0}, {"planned_steps": True}):
        with pytest.raises(ParameterError, match="loop config"):
            LoopConfig(**bad)
    with pytest.raises(ParameterError, match="model"):
        TrainingLoop(object())
    assert LoopConfig.from_dict(LoopConfig(lr=0.5).as_dict()) == LoopConfig(lr=0.5)


def test_pause_by_the_stop_event_and_resume_continue_the_step_count_exactly():
    straight = _loop()
    straight.run(100)
    loop = _loop()
    stop = threading.Event()
    seen = []

    def cb(ev):
        seen.append(ev)
        if ev.step == 37:
            stop.set()

    ev = loop.run(100, callbacks=[cb], stop=stop)
    assert ev.status == "stopped" and ev.step == 37 == loop.step_count
    assert "paused at step 37" in ev.message
    stop.clear()
    ev = loop.run(63, callbacks=[cb], stop=stop)
    assert ev.status == "done" and ev.step == 100
    assert [e.step for e in seen if e.status != "stopped"] == list(range(1, 101))
    assert loop.history == straight.history
    assert _same(_state(loop.model), _state(straight.model))


def test_checkpoint_round_trip_is_exact_and_refuses_other_tasks_and_models(tmp_path):
    loop = _loop(eval_every=10)
    loop.run(50)
    path = loop.save(tmp_path / "reg.pt")
    assert sorted(os.listdir(tmp_path)) == ["reg.pt"]                 # no temporary left
    ck = load_checkpoint(path)
    assert ck.task_name == "mlp-regression" and ck.task_config == {"width": 32}
    assert ck.model_spec["class"] == "torch.nn.modules.container.Sequential"
    other = _loop(Regression(seed=9))                                 # other initial weights
    assert not _same(_state(other.model), _state(loop.model))
    other.restore(path)
    assert _same(_state(other.model), _state(loop.model))
    assert other.step_count == 50 and other.history == loop.history
    assert other.metric_history == loop.metric_history
    a, b = other.optimizer.state_dict(), loop.optimizer.state_dict()
    for i, st in b["state"].items():
        for key, v in st.items():
            assert torch.equal(a["state"][i][key], v)
    loop.run(10)
    other.run(10)                                                     # continues identically
    assert _same(_state(other.model), _state(loop.model)) and other.history == loop.history

    class OtherTask(Regression):
        name = "classification"

    with pytest.raises(CheckpointMismatchError) as info:
        _loop(OtherTask()).restore(path)
    msg = str(info.value)
    assert "'mlp-regression'" in msg and "'classification'" in msg and "\n" not in msg
    with pytest.raises(CheckpointMismatchError, match="other shapes") as info:
        _loop(Regression(width=16)).restore(path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, CheckpointError) and isinstance(info.value, ExplorerError)


def test_a_registered_model_rebuilds_from_its_checkpoint(tmp_path):
    class Affine(torch.nn.Module):
        kind = "test-affine"

        def __init__(self, n: int):
            super().__init__()
            self.config = {"n": n}
            self.lin = torch.nn.Linear(n, n)

    class Fit(Task):
        name = "affine-fit"

        def __init__(self):
            self.model = Affine(3)

        def loss(self, model, step):
            return (model.lin(torch.ones(5, 3)) - 1).pow(2).mean()

    loop = TrainingLoop(Fit())
    loop.run(3)
    loop.save(tmp_path / "a.pt")
    ck = load_checkpoint(tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="no model registered for 'test-affine'"):
        ck.model()
    register_model("test-affine", lambda cfg: Affine(**cfg))
    assert _same(_state(ck.model()), _state(loop.model))


def test_one_nan_loss_is_skipped_and_counted_and_the_run_goes_on():
    loop = _loop(Regression(poison={5}))
    events: list[TrainEvent] = []
    loop.run(5, callbacks=[events.append])
    before = _state(loop.model)
    adam = {k: v.clone() for k, v in loop.optimizer.state_dict()["state"][0].items()}
    out = loop.step()                                                 # the poisoned batch
    assert out["skipped"] == 1.0 and math.isnan(out["loss"])
    assert loop.step_count == 5 and loop.skipped == 1 and "loss is nan" in loop.last_problem
    assert _same(_state(loop.model), before)                           # no update applied
    for k, v in loop.optimizer.state_dict()["state"][0].items():
        assert torch.equal(v, adam[k])
    assert len(loop.history["loss"]) == 5                               # not recorded as a step
    # in run(): the skipped batch emits an event and does not count towards n
    loop2 = _loop(Regression(poison={5}))
    events = []
    ev = loop2.run(10, callbacks=[events.append])
    assert ev.status == "done" and ev.step == 10 and ev.skipped == 1
    skipped = [e for e in events if not e.losses]
    assert len(skipped) == 1 and "skipped at step 6" in skipped[0].message
    assert len(events) == 11 and all(math.isfinite(x) for x in loop2.history["loss"])


def test_repeated_nans_end_the_run_with_a_clear_reason():
    loop = _loop(Regression(poison=set(range(8, 10_000))), max_bad_steps=4, snapshot_every=5)
    ev = loop.run(50)
    assert ev.status == "diverged" and ev.step == 8 and ev.eta is None
    assert "diverged at step 9" in ev.message and "4 batches in a row" in ev.message
    assert "loss is nan" in ev.message and "last good state (step 5) was restored" in ev.message
    assert ev.skipped == 4 == loop.skipped and "\n" not in ev.message
    with pytest.raises(TrainingDivergedError) as info:                 # step() raises it
        for _ in range(4):
            loop.step()
    assert info.value.step == 9 and "loss is nan" in info.value.reason
    assert isinstance(info.value, ExplorerError)
    # max_bad_steps=1: the first bad batch ends the run (the old behaviour)
    one = _loop(Regression(poison={3}), max_bad_steps=1)
    ev = one.run(10)
    assert ev.status == "diverged" and ev.step == 3 and "batches in a row" not in ev.message


def test_rollback_restores_the_last_snapshot_in_place(monkeypatch):
    loop = _loop(snapshot_every=5)
    states = {}
    loop.run(7, callbacks=[lambda ev: states.__setitem__(ev.step, (
        _state(loop.model), {k: v.clone() for k, v in loop.optimizer.state_dict()["state"][0].items()}))])
    assert loop.good_step == 5
    buffers = [b.data_ptr() for b in loop._good_model]
    loop.run(5)                                                       # snapshot at step 10
    assert loop.good_step == 10
    assert [b.data_ptr() for b in loop._good_model] == buffers         # copied in place
    # non-finite weights after an update: back to the snapshot (model and optimiser)
    loop2 = _loop(snapshot_every=5)
    loop2.run(7, callbacks=[lambda ev: states.__setitem__(ev.step, (
        _state(loop2.model), {k: v.clone() for k, v in loop2.optimizer.state_dict()["state"][0].items()}))])
    real = loop2.optimizer.step

    def poisoned(*a, **kw):
        real(*a, **kw)
        with torch.no_grad():
            loop2.model[0].weight[0, 0] = float("inf")

    monkeypatch.setattr(loop2.optimizer, "step", poisoned)
    out = loop2.step()
    assert out["skipped"] == 1.0 and loop2.rollbacks == 1 and loop2.step_count == 7
    assert "weights became non-finite" in loop2.last_problem
    model5, adam5 = states[5]
    assert _same(_state(loop2.model), model5)
    for k, v in loop2.optimizer.state_dict()["state"][0].items():
        assert torch.equal(v, adam5[k])
    monkeypatch.setattr(loop2.optimizer, "step", real)
    assert loop2.run(3).step == 10                                      # and training goes on
    # snapshot_every=0: rollback is off, and there is nothing to return to
    off = _loop(snapshot_every=0)
    off.run(3)
    assert off.rollback() is None and off._good_model is None


def test_truncated_and_malicious_checkpoints_give_one_line_errors(tmp_path):
    loop = _loop()
    loop.run(3)
    path = loop.save(tmp_path / "ok.pt")
    blob = path.read_bytes()
    cases = {"half.pt": blob[: len(blob) // 2], "tail.pt": blob[:-40], "junk.pt": os.urandom(300),
             "empty.pt": b""}

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": "dynamics-explorer/checkpoint", "version": 2, "evil": Evil()},
               tmp_path / "evil.pt")
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    for name in [*cases, "evil.pt"]:
        with pytest.raises(CheckpointError) as info:
            _loop().restore(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value), (name, str(info.value))
    torch.save({"format": "dynamics-explorer/checkpoint", "version": 99}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "new.pt")
    torch.save({"format": "dynamics-explorer/checkpoint", "version": 2, "model_state": [1, 2]},
               tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(tmp_path / "odd.pt")


@pytest.mark.slow
def test_no_seed_of_the_train_dsr_defaults_ends_a_run_at_its_start(tmp_path):
    """`train dsr --system lorenz63 --seed S` for S in 0..19 (the CLI's defaults, data and
    trainer built as the CLI builds them): 20 steps each, none may end the run. Seed 7 used to
    stop at step 1 with an infinite gradient norm; now that batch is skipped and counted."""
    from explorer.cli import build_parser, dsr_setup
    from explorer.training import Trainer

    results = {}
    for seed in range(20):
        args = build_parser().parse_args(["train", "dsr", "--system", "lorenz63", "--seed",
                                          str(seed), "--out", str(tmp_path / "x.pt")])
        data, cfg = dsr_setup(args)
        tr = Trainer(data, cfg.replace(metrics_every=0))
        ev = tr.run(20)
        results[seed] = (ev.status, ev.step, ev.skipped)
    assert all(r[:2] == ("done", 20) for r in results.values()), results
