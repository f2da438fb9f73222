"""The Spectra page headless: the controller's preview, presets, URL, training frames,
stability, token dynamics and the CLI (`spectra`, `train ssm`), against closed-form answers."""

import json
import math

import numpy as np
import pytest
import torch

from explorer.cli import main
from explorer.controllers.spectra import PRESETS, SpectraController, model_frame


def ctl(**kw):
    c = SpectraController(**kw)
    c.request_preview()                  # the view asks for it when it is built
    c.wait(120)
    return c


def test_preview_of_s4d_lin_has_its_closed_form_eigenvalues():
    c = ctl(state_size=16, channels=2)
    f = c.frame
    assert f is not None and f.step == 0 and f.family == "ssm"
    lam = f.cont.reshape(2, -1)[0]
    assert np.allclose(lam.real, -0.5, atol=1e-5)
    assert np.allclose(np.sort(np.abs(lam.imag)), math.pi * np.arange(8), atol=1e-4)
    # zero-order hold: |λ̄| = exp(Δ Re λ) per channel
    dt = f.dt
    disc = f.disc.reshape(2, -1)
    assert np.allclose(np.abs(disc), np.exp(dt[:, None] * -0.5), atol=1e-5)
    assert f.lyapunov == pytest.approx(float(np.max(-0.5 * dt)), rel=1e-4)
    # the target ρ(s) = e^{-s/τ} scaled to a unit-variance output under white noise:
    # c = (Σ_s e^{-2s/τ})^{-1/2} = sqrt(1 - e^{-2/τ}) (to e^{-2L/τ})
    assert f.target is not None and f.target[0] == pytest.approx(math.sqrt(1 - math.exp(-0.1)), rel=1e-6)
    assert f.target[20] / f.target[0] == pytest.approx(math.exp(-1.0), rel=1e-9)       # τ = 20


def test_switching_the_initialisation_moves_the_eigenvalues():
    c = ctl(state_size=8, channels=1)
    before = c.frame.cont.copy()
    c.init = "s4d-real"
    c.wait(60)
    after = c.frame.cont
    assert not np.allclose(np.sort_complex(before), np.sort_complex(after)[: before.size])
    assert np.allclose(np.sort(after.real), -np.arange(after.size, 0, -1), atol=1e-5)
    assert np.allclose(after.imag, 0.0, atol=1e-6)


def test_hippo_preset_link_gives_minus_one_to_minus_n():
    c = SpectraController(auto=False)
    problems = c.apply_query({"page": ["spectra"], "preset": ["hippo"]})
    assert problems == []
    assert (c.init, c.state_size, c.preset) == ("legs", 16, "hippo")
    c.request_preview()
    c.wait(60)
    lam = c.frame.cont.reshape(c.channels, -1)        # the LegS matrix is shared by the channels
    assert np.allclose(np.sort(lam[0].real), -np.arange(16, 0, -1), atol=1e-6)
    assert np.allclose(lam.imag, 0.0, atol=1e-6)


def test_euler_on_s4d_inv_is_flagged_unstable():
    c = SpectraController(auto=False)
    c.apply_query({"preset": "euler-unstable"})
    c.request_preview()
    c.wait(60)
    f = c.frame
    assert np.abs(f.disc).max() > 1.0
    assert "unstable" in f.warning
    assert "unstable" in c.status


def test_bad_settings_are_one_line_errors_not_exceptions():
    c = ctl(state_size=8)
    c.dt_min, c.dt_max = 0.5, 0.1
    c.wait(10)
    assert "Δ min" in c.errors["preview"]
    c.param.update(dt_min=1e-3, dt_max=0.1)
    c.state_size = 7
    c.wait(10)
    assert "even state size" in c.errors["preview"]


def test_query_round_trip():
    c = SpectraController(auto=False, init="lru", state_size=32, discretization="bilinear",
                          memory="delay", strength=12.0)
    q = c.to_query()
    d = SpectraController(auto=False)
    assert d.apply_query(q) == []
    for name in ("init", "state_size", "discretization", "memory", "strength"):
        assert getattr(d, name) == getattr(c, name)
    problems = d.apply_query({"N": "lots"})
    assert problems and "N='lots'" in problems[0] and d.state_size == 32


def test_training_moves_the_spectrum_and_reports_frames():
    c = ctl(state_size=8, channels=2, seq_len=64, train_batch=8, steps=60, lr=2e-2)
    before = c.frame.cont.copy()
    assert c.start()
    c.wait(180)
    assert c.phase == "done", (c.phase, c.status, c.errors)
    f = c.frame
    assert f.step == 60
    assert not np.allclose(f.cont, before)
    assert len(c.history["loss"]) == 60
    assert c.history["loss"][-1] < c.history["loss"][0]


def test_transformer_frame_attention_is_row_stochastic_with_leading_eigenvalue_one():
    c = ctl(family="transformer", n_heads=2, d_head=4, seq_len=32)
    f = c.frame
    a = f.attention
    assert a.shape == (2, 32, 32)
    assert np.allclose(a.sum(-1), 1.0, atol=1e-6)
    assert np.allclose(np.triu(a, 1), 0.0)                          # causal
    ev = f.disc.reshape(2, -1)
    assert np.allclose(np.abs(ev).max(axis=1), 1.0, atol=1e-6)
    assert (np.abs(f.disc) <= 1 + 1e-6).all()
    assert f.circuits is not None and f.circuits["qk"].shape[:2] == (1, 2)


def test_selective_tokens_and_stability():
    c = ctl(family="selective", d_model=4, d_state=4, seq_len=64)
    f = c.frame
    assert (f.cont.real < 0).all() and np.allclose(f.cont.imag, 0)
    assert ((np.abs(f.disc) > 0) & (np.abs(f.disc) < 1)).all()
    assert f.lyapunov < 0                                          # Mamba is Lyapunov-stable
    tp = c.tokens
    assert tp is not None and tp.regime in ("converge", "diverge-slow", "diverge-fast")
    assert tp.regimes.shape == (tp.sdx_axis.size, tp.mu_axis.size)
    c.request_stability()
    c.wait(120)
    s = c.stability
    assert s is not None and any(k.startswith("transformer") for k in s.curves)
    assert any(k.startswith("selective") for k in s.lyapunov)


def test_stability_of_a_linear_ssm_decays_at_its_lyapunov_rate():
    c = ctl(init="s4d-real", state_size=4, channels=1, dt_min=0.05, dt_max=0.05, seq_len=400)
    c.request_stability()
    c.wait(120)
    s = c.stability
    label = next(k for k in s.curves if k.startswith("ssm"))
    lam = s.lyapunov[label]
    assert lam == pytest.approx(-0.05, rel=1e-3)                    # Δ · max Re λ = 0.05 · (−1)
    r = s.curves[label]
    slope = (math.log(r[300]) - math.log(r[200])) / 100     # the slowest mode alone by then
    assert slope == pytest.approx(lam, rel=0.05)


def test_model_frame_of_a_model_at_rest_does_not_change_it():
    from explorer.controllers.spectra import build_model

    c = SpectraController(auto=False)
    m = build_model("ssm", c.model_config())
    state = {k: v.clone() for k, v in m.state_dict().items()}
    model_frame(m, "ssm", c.task_settings(), step=3)
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())


def test_every_preset_previews_without_error():
    for key in PRESETS:
        c = SpectraController(auto=False)
        c.apply_query({"preset": key})
        c.request_preview()
        c.wait(60)
        assert c.frame is not None and "preview" not in c.errors, (key, c.errors)
        c.close()


# ---------------------------------------------------------------- CLI
def test_cli_spectra_json_legs_and_bilinear(capsys):
    assert main(["spectra", "--init", "legs", "--state-size", "8", "--dt", "0.1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    cont = np.array(out["continuous"])
    assert np.allclose(np.sort(cont[:, 0]), -np.arange(8, 0, -1)) and np.allclose(cont[:, 1], 0)
    disc = np.array(out["discrete"])
    assert np.allclose(np.sort(disc[:, 0]), np.exp(-0.1 * np.arange(8, 0, -1)))
    assert main(["spectra", "--init", "s4d-lin", "--state-size", "8", "--dt", "0.5",
                 "--discretization", "bilinear", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    lam = np.array(out["continuous"]) @ np.array([1, 1j])
    z = np.array(out["discrete"]) @ np.array([1, 1j])
    assert np.allclose(z, (1 + 0.5 * lam / 2) / (1 - 0.5 * lam / 2))
    assert np.allclose(lam.real, -0.5)


def test_cli_spectra_rejects_bad_input(capsys):
    assert main(["spectra", "--init", "nope", "--state-size", "8"]) == 2
    assert "unknown --init" in capsys.readouterr().err
    assert main(["spectra", "--init", "legs", "--state-size", "8", "--dt", "-1"]) == 2


def test_cli_train_ssm_writes_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "run.pt"
    rc = main(["train", "ssm", "--init", "s4d-lin", "--task", "exp-memory", "--state-size", "8",
               "--channels", "2", "--length", "64", "--batch", "8", "--steps", "10", "--quiet",
               "--json", "--out", str(out)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "done" and out.exists()
    assert summary["task"] == "memory" and summary["memory"] == "exp"
    assert main(["train", "ssm", "--task", "nope", "--out", str(tmp_path / "x.pt")]) == 2


def test_heads_sweep_keeps_the_budget():
    c = SpectraController(auto=False, family="transformer", task="retrieval", budget=4,
                          sweep_steps=10, D=2, seq_len=8)
    c.request_sweep()
    c.wait(180)
    sw = c.sweep
    assert sw is not None, c.errors
    assert tuple(sw.heads) == (1, 2, 4)
    assert [h * d for h, d in zip(sw.heads, sw.d_heads)] == [4, 4, 4]
    assert len(set(sw.params)) == 1                      # the same parameter count for every h
    assert "lowest loss" in c.status


def test_checkpoint_round_trip_restores_settings_and_spectrum():
    c = ctl(state_size=8, channels=2, seq_len=32, train_batch=4, steps=15, init="s4d-inv")
    assert c.start()
    c.wait(120)
    assert c.phase == "done"
    blob = c.checkpoint_bytes()
    d = SpectraController(auto=False)
    assert d.load_checkpoint(blob, "spectra.pt"), d.errors
    assert (d.init, d.state_size, d.channels) == ("s4d-inv", 8, 2)
    assert d.frame is not None and d.frame.step == 15
    assert np.allclose(d.frame.cont, c.frame.cont, atol=1e-6)
    assert not d.load_checkpoint(b"not a checkpoint", "bad.pt")
    assert "checkpoint" in d.errors


def test_zero_real_timescale_follows_the_input_autocorrelation():
    """Δ = 1/sqrt(L λ_max): white noise λ_max = 1, AR(1) (1 + φ)/(1 − φ) = 9 at φ = 0.8."""
    white = ctl(init="zero-real", state_size=8, channels=2, seq_len=256)
    assert np.allclose(white.frame.dt, 1 / 16)
    assert np.allclose(white.frame.cont.real, 0.0)
    assert np.allclose(np.abs(white.frame.disc), 1.0)               # on the unit circle
    ar = ctl(init="zero-real", state_size=8, channels=2, seq_len=256, input_kind="ar1", phi=0.8)
    assert np.allclose(ar.frame.dt, 1 / (16 * 3))
