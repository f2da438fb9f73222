"""The Reconstruction page's controller without a browser: runs, limits, uploads, checkpoints."""

import io
import time

import numpy as np
import pytest
import torch

from explorer.controllers import reconstruction as rc
from explorer.controllers.reconstruction import ReconstructionController, active_runs
from explorer.training import Trainer, TrainingDivergedError

#: a tiny, fast setup: 300 samples of Lorenz-63, a small shallow PLRNN, short windows
TINY = dict(auto=False, length=300, seq_len=10, batch=4, hidden=8, metrics_every=20)


@pytest.fixture
def make():
    made = []

    def factory(**kw):
        c = ReconstructionController(**{**TINY, **kw})
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()
        c.join(10)


def _until(c, cond, timeout=20.0):
    """Poll the controller (as the view's tick does) until ``cond()``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        c.poll()
        if cond():
            return True
        time.sleep(0.02)
    raise AssertionError(f"timed out; phase={c.phase!r} status={c.status!r}")


def test_tiny_run_trains_reports_and_analyses(make):
    c = make(steps=40)
    assert c.start()
    assert c.phase == "preparing" and active_runs() >= 1
    p = c.wait(30)
    assert c.phase == "done", c.status
    assert c.step == 40 and c.progress == 1.0
    assert c.history["step"] == list(range(1, 41))
    assert len(p.records) == 40 and np.isfinite(c.history["loss"]).all()
    assert [m["step"] for m in c.metric_history] == [20, 40]
    assert {"d_stsp", "d_h", "pe"} <= set(c.metric_history[-1])
    assert c.status.startswith("done: 40 steps")
    # a live frame: free run against the data, with its subregion sequence
    f = c.last_frame
    assert f.x_gen is not None and f.x_gen.shape == f.x_true.shape and f.x_true.shape[1] == 3
    assert f.symbols.shape[0] > 0 and f.graph.shape == (len(f.codes), len(f.codes))
    # the model analysed through as_system(): fixed points, symbolic sequence, graph
    a = c.analysis
    assert a is not None and a.step == 40 and a.latent_dim == 3
    assert int(a.graph.sum()) == len(a.symbols) - 1
    assert a.fixed_observed.shape == (len(a.fixed), 3)
    assert "analysis:" in c.status
    c.request_lyapunov()
    c.wait(30)
    assert c.lyapunov is not None and c.lyapunov.per_time.shape == (3,)
    assert c.lyapunov.dt == pytest.approx(0.01) and c.lyapunov.data_lyapunov == pytest.approx(0.9056)
    assert active_runs() == 0


def test_pause_resume_stop(make):
    c = make(steps=100_000, metrics_every=0)
    assert c.start()
    _until(c, lambda: c.step >= 3)
    assert c.phase == "running" and "training: step" in c.status and "left" in c.status
    assert c.pause()
    c.wait(20)
    assert c.phase == "paused" and c.status.startswith("paused at step")
    paused_at = c.step
    assert 3 <= paused_at < 100_000 and len(c.history["step"]) == paused_at
    time.sleep(0.2)
    assert c.poll().records == [] and c.step == paused_at       # nothing trains while paused
    assert c.can_resume() and c.resume()
    assert c.phase == "running"
    _until(c, lambda: c.step >= paused_at + 3)
    assert c.history["step"] == list(range(1, c.step + 1))       # one continuous loss curve
    assert c.stop()
    c.wait(20)
    assert c.phase == "stopped" and c.status.startswith("stopped at step")
    assert active_runs() == 0
    c.reset()
    assert c.phase == "idle" and c.step == 0 and c.history["step"] == [] and c.trainer is None


def test_server_wide_run_limit(make, monkeypatch):
    monkeypatch.setenv("EXPLORER_MAX_RUNS", "1")
    a, b = make(steps=100_000, metrics_every=0), make(steps=10)
    assert a.start()
    assert not b.start()
    assert "busy: 1 runs active" in b.status and b.errors["run"].startswith("busy: 1 runs active")
    assert b.phase == "idle"
    _until(a, lambda: a.step >= 1)
    a.pause()
    a.wait(20)
    assert active_runs() == 0
    assert b.start()                                   # the slot is free again
    assert not a.resume() and "busy: 1 runs active" in a.status
    b.wait(30)
    assert b.phase == "done" and a.resume()
    a.stop()
    a.wait(20)
    assert active_runs() == 0


@pytest.mark.parametrize("settings", [dict(model="plrnn", latent=5), dict(model="alrnn", latent=5, n_relu=2),
                                      dict(sparse_tf=True, tau=4), dict(alpha_mode="fixed", alpha=0.3)])
def test_model_kinds_and_forcing_modes(make, settings):
    c = make(steps=6, metrics_every=3, **settings)
    assert c.start()
    c.wait(30)
    assert c.phase == "done" and c.step == 6, c.status
    cfg = c.trainer.config
    assert cfg.model == c.model and cfg.latent_dim == c.latent
    assert cfg.alpha_mode == ("sparse" if c.sparse_tf else c.alpha_mode)
    a = c.analysis
    assert a.n_switches == c.trainer.model.n_switches and len(a.codes) >= 1


def test_custom_system_as_data_source(make):
    c = make(system="custom", noise=0.0, length=400)
    c.equations = "x[n+1] = 1 - a*x^2 + y\ny[n+1] = b*x"
    c.custom_params = "a = 1.4, b = 0.3"
    c.request_data()
    c.wait(20)
    assert "data" not in c.errors, c.errors
    assert c.data.dim == 2 and c.data.length == 400 and c.data.dt == 1.0
    c.custom_params = "a = 1.4"
    c.request_data()
    c.wait(20)
    assert "b" in c.errors["data"]


def test_malformed_upload_is_one_line_error(make):
    c = make()
    assert not c.load_file(b"x,y\n1,2\nfoo,3\n", "bad.csv")
    assert c.errors["data"] == "bad.csv, line 3: 'foo' is not a number"
    assert c.status == "⚠ bad.csv, line 3: 'foo' is not a number"
    assert c.source == "system" and c.data is None
    assert not c.load_file(b"\x93NUMPY garbage", "x.npy")
    assert "x.npy" in c.errors["data"] and "\n" not in c.errors["data"]
    assert not c.load_file(b"1,2\n", "data.xlsx")
    assert "unknown file type" in c.errors["data"]
    assert not c.load_file(b"1,2\n3,4\n", "short.csv")
    assert "fewer than" in c.errors["data"]


def test_uploaded_series_trains(make):
    c = make(steps=15, metrics_every=0)
    t = np.arange(400) * 0.05
    buf = io.BytesIO()
    np.save(buf, np.stack([np.sin(t), np.cos(1.3 * t)], 1))
    assert c.load_file(buf.getvalue(), "osc.npy"), c.status
    assert c.source == "file" and c.file_name == "osc.npy" and "data" not in c.errors
    assert c.data.dim == 2 and c.data.length == 400 and c.preview.x_true.shape == (400, 2)
    csv = "a,b\n" + "\n".join(f"{np.sin(x):.5f},{np.cos(x):.5f}" for x in t)
    assert c.load_file(csv.encode(), "osc.csv")
    assert c.data.variables == ("a", "b")
    c.file_dt = 0.05
    assert c.data.dt == pytest.approx(0.05)
    assert c.start()
    c.wait(30)
    assert c.phase == "done" and c.trainer.data.variables == ("a", "b")


def test_checkpoint_round_trip_through_the_controller(make):
    c = make(steps=30)
    c.start()
    c.wait(30)
    blob = c.checkpoint_bytes()
    assert len(blob) > 1000
    raw = torch.load(io.BytesIO(blob), weights_only=True)          # plain data only
    assert raw["format"] == "dynamics-explorer/checkpoint"
    assert c.checkpoint_filename().endswith("step30.pt")
    d = make(model="alrnn")
    assert not d.load_checkpoint(b"not a checkpoint", "junk.pt")
    assert d.errors["checkpoint"].startswith("junk.pt: ")
    assert d.load_checkpoint(blob, "model.pt"), d.status
    assert d.phase == "paused" and d.step == 30 and d.model == "shplrnn" and d.hidden == 8
    assert d.history["loss"] == c.history["loss"]
    assert [m["step"] for m in d.metric_history] == [20]
    d.wait(30)
    assert d.last_frame is not None and d.analysis is not None
    # same weights: the analyses agree
    assert d.analysis.codes == c.analysis.codes
    d.steps = 45
    assert d.resume()
    d.wait(30)
    assert d.phase == "done" and d.step == 45 and d.history["step"] == list(range(1, 46))


def test_checkpoint_while_training_is_taken_between_steps(make):
    c = make(steps=100_000, metrics_every=0)
    c.start()
    _until(c, lambda: c.step >= 2)
    blob = c.checkpoint_bytes()
    assert c.running
    raw = torch.load(io.BytesIO(blob), weights_only=True)
    assert raw["trainer_state"]["step_count"] >= 2
    c.stop()
    c.wait(20)


def test_divergence_is_rolled_back_with_the_step(make, monkeypatch):
    real = Trainer.step

    def step(self):
        if self.step_count == 6:
            raise TrainingDivergedError("training diverged at step 7: the loss is nan; the last "
                                        "good state (step 6) was restored", 7, "nan loss")
        return real(self)

    monkeypatch.setattr(Trainer, "step", step)
    c = make(steps=50, metrics_every=0)
    c.start()
    c.wait(30)
    assert c.phase == "diverged" and c.step == 6
    assert "diverged at step 7" in c.errors["run"] and c.status.startswith("⚠")
    assert c.can_resume()


def test_pause_while_preparing_cancels(make):
    c = make(steps=10, length=100_000)
    c.start()
    c.pause()
    c.wait(30)
    assert c.phase == "idle" and c.trainer is None and "cancelled" in c.status
    assert active_runs() == 0


def test_session_close_stops_the_run(make):
    c = make(steps=1_000_000, metrics_every=0)
    c.start()
    _until(c, lambda: c.step >= 1)
    c.close()
    assert c.join(10)
    assert active_runs() == 0
    assert not c.start()                      # a closed session starts nothing


def test_settings_are_validated(make):
    c = make()
    with pytest.raises(ValueError):
        c.latent = 0
    with pytest.raises(ValueError):
        c.noise = -0.1
    c.model = "plrnn"
    assert c.latent == 20                     # the model's default latent size
    c.model = "shplrnn"
    c.request_data()
    c.wait(20)
    assert c.data is not None and c.data.dim == 3
    c.latent = 2                              # Lorenz-63 has 3 observed coordinates
    assert not c.start() and "latent dimension M = 2" in c.errors["run"]
    c.latent = 3
    c.length = 200_000
    c.subsample = 100
    c.request_data()
    c.wait(20)
    assert "over the limit" in c.errors["data"]
    c.system = "custom"
    c.equations = "dx/dt = -y +* 2"
    assert c.check_custom() and rc.CUSTOM == "custom"


# ----------------------------------------------------------------------------- presets, URL, verdict
def test_lecture_preset_sets_short_windows_and_frequent_cheap_invariants(make):
    c = make()
    c.apply_preset("lecture")
    p = rc.RUN_PRESETS["lecture"]
    assert c.preset == "lecture" and c.system == "lorenz63"
    for name, value in p.settings.items():
        assert getattr(c, name) == value, name
    cfg = c.trainer_config(3)
    assert cfg.metrics_every == p.settings["metrics_every"] < 100
    assert cfg.metric_length * cfg.metric_runs <= 8000
    assert cfg.lr_end == min(p.settings["lr_end"], p.settings["lr"])
    assert c.to_query() == {"preset": "lecture"}
    c.seq_len = 60                                     # a change by hand: no longer the preset
    assert c.preset == "" and c.to_query()["sys"] == "lorenz63"
    with pytest.raises(rc.ParameterError, match="unknown preset"):
        c.apply_preset("nope")


def test_url_query_applies_preset_and_settings_and_reports_bad_values(make):
    c = make()
    assert c.apply_query({"page": ["reconstruction"], "preset": ["lecture"]}) == []
    assert c.preset == "lecture" and c.length == rc.RUN_PRESETS["lecture"].settings["length"]
    d = make()
    problems = d.apply_query({"sys": "rossler", "model": "alrnn", "steps": "500", "seed": "x"})
    assert d.system == "rossler" and d.model == "alrnn" and d.steps == 500
    assert len(problems) == 1 and problems[0].startswith("seed='x'")
    assert "seed=&#x27;x&#x27;" in d.notice or "seed='x'" in d.notice     # stays until dismissed
    assert d.apply_query({"preset": "<b>nope</b>"})[0].startswith("unknown preset")
    assert "&lt;b&gt;nope" in d.notice and "<b>" not in d.notice          # escaped, never markup


def test_stop_ends_the_run_resume_is_refused_and_start_begins_anew(make):
    c = make(steps=100_000, metrics_every=0)
    assert c.start()
    _until(c, lambda: c.step >= 2)
    assert c.stop()
    c.wait(20)
    assert c.phase == "stopped" and not c.can_resume()
    assert "Start trains a new model" in c.status
    assert not c.resume() and "press Start" in c.status and c.phase == "stopped"
    assert c.start()                                   # Start is the way on
    _until(c, lambda: c.step >= 1)
    c.pause()
    c.wait(20)
    assert c.phase == "paused" and c.can_resume()
    assert c.stop() and c.phase == "stopped" and not c.can_resume()


def test_verdict_is_live_from_metrics_and_final_after_the_run(make):
    c = make(steps=40)
    assert c.verdict is None
    c.start()
    c.wait(30)
    v = c.verdict
    assert v is not None and not v.ok                  # 40 tiny steps: not a reconstruction
    assert v.kind in ("poor match", "fixed point", "diverged")
    assert f"not a reconstruction: {v.reason}" in c.status
    assert {"spread", "escaped"} <= set(c.metric_history[-1])
    c.reset()
    assert c.verdict is None


def test_verdict_of_a_constant_model_says_fixed_point(make, monkeypatch):
    """A model whose free run is constant (all weights zero) is flagged, by the CLI's and
    the page's shared function."""
    from explorer.training.verdict import reconstruction_verdict
    c = make(steps=2, metrics_every=0)
    c.start()
    c.wait(30)
    tr = c.trainer
    with torch.no_grad():
        for p in tr.model.parameters():
            p.zero_()
    v = tr.verdict(length=1000, runs=2)
    assert not v.ok and v.kind == "fixed point", v.line()
    x = tr.data.reference if tr.data.reference is not None else tr.data.x
    assert reconstruction_verdict(x, torch.zeros(500, 3)).kind == "fixed point"
