"""The Stochastic page without a browser: its controller against known answers (the
entropy production of the rotating Ornstein–Uhlenbeck process is 2γ², zero for a gradient
drift), its sweep, its live training run and its view's plots."""

import math
import time

import numpy as np
import pytest

from explorer.controllers.stochastic import PRESETS, StochasticController
from explorer.pages import REGISTRY, page


def _ready(preset: str, **settings) -> StochasticController:
    c = StochasticController(**settings)
    c.apply_preset(preset)
    c.wait(240)
    assert c.sample is not None, (c.status, c.errors)
    return c


def test_registered_and_offers_only_sdes_with_two_or_more_variables():
    assert REGISTRY["stochastic"].title == "Stochastic" and page("stochastic").key == "stochastic"
    c = StochasticController()
    offered = c.param.system.objects
    assert {"linear_ou", "rotating_double_well", "maier_stein", "fene_dumbbell", "sgld",
            "stochastic_lorenz", "custom"} <= set(offered)
    assert "lorenz63" not in offered and "ornstein_uhlenbeck" not in offered  # a flow; 1D
    assert set(PRESETS) == {"equilibrium", "rotating-ou", "double-well", "polymer", "sgld"}


def test_rotating_ou_rate_is_two_gamma_squared_and_equilibrium_is_zero():
    c = _ready("rotating-ou")
    s = c.sample
    assert s.exact == pytest.approx(2.0, abs=1e-9)               # 2 γ² at γ = 1, exact
    assert abs(s.rate - 2.0) < 0.05 * 2.0 and abs(s.rate - 2.0) < 4 * s.stderr + 0.03, (s.rate, s.stderr)
    assert s.temperature == pytest.approx(1.0)
    # the maps: density normalised on the grid; the velocity circulates (curl 2γ)
    cell = (s.xs[1] - s.xs[0]) * (s.ys[1] - s.ys[0])
    assert np.nansum(s.density) * cell == pytest.approx(1.0, abs=0.01)   # tails beyond the grid
    i, j = len(s.xs) // 2, len(s.ys) // 2
    vx, vy = s.velocity
    dvy_dx = (vy[j, i + 2] - vy[j, i - 2]) / (s.xs[i + 2] - s.xs[i - 2])
    dvx_dy = (vx[j + 2, i] - vx[j - 2, i]) / (s.ys[j + 2] - s.ys[j - 2])
    assert dvy_dx - dvx_dy == pytest.approx(2.0, abs=0.6)        # v = γ J x: curl 2γ
    c.apply_preset("equilibrium")
    c.wait(240)
    s = c.sample
    assert s.exact == pytest.approx(0.0, abs=1e-12)
    assert abs(s.rate) < 3 * s.stderr + 1e-3, (s.rate, s.stderr)


def test_sweep_follows_the_parabola_in_one_batched_run():
    c = _ready("rotating-ou", duration=20.0)
    c.param.update(sweep_n=4, sweep_low=0.0, sweep_high=1.5, sweep_batch=48)
    c.request_sweep()
    c.wait(240)
    sw = c.sweep
    assert sw is not None and sw.name == "rotation", (c.status, c.errors)
    assert np.allclose(sw.exact, 2 * sw.values ** 2)
    assert np.all(np.abs(sw.rates - sw.exact) < 4 * sw.stderrs + 0.05), (sw.rates, sw.stderrs)


def test_bad_input_is_a_message_not_an_exception():
    c = StochasticController()
    problems = c.check_custom("x' = -x +* y\ny' = -y", "a = 1", "1, 1")
    assert problems and "column" in problems[0].lower() or problems
    assert c.check_custom(c.equations, c.custom_params, "1") != []       # one entry for 2 variables
    assert c.check_custom(c.equations, c.custom_params, "1, -2") != []   # a negative diffusion
    assert c.check_custom(c.equations, c.custom_params, "1, 0.5*(1 + x^2)") == []
    c.param.update(batch=100_000, duration=10_000.0)
    c.request_sample()
    assert "over the limit" in c.errors["sample"]
    with pytest.raises(Exception, match="unknown preset"):
        c.apply_preset("nope")
    assert c.apply_query({"preset": "rotating-ou", "p.rotation": "nan", "batch": "x"})
    assert c.preset == "rotating-ou" and c.values["rotation"] == 1.0
    c2 = StochasticController()
    c2.apply_query({"sys": "linear_ou", "p.rotation": "0.5", "T": "20"})
    assert c2.system == "linear_ou" and c2.values["rotation"] == 0.5 and c2.duration == 20.0


def test_custom_sde_samples_and_a_diverging_one_says_so():
    c = StochasticController(duration=20.0)
    c.param.update(equations="x' = -x + a*y\ny' = -a*x - y", custom_params="a = 1", diffusion="1, 1")
    c.system = "custom"
    c.wait(240)
    assert c.sample is not None and c.sample.exact == pytest.approx(2.0), (c.status, c.errors)
    c.param.update(equations="x' = x^3\ny' = y^3", diffusion="1, 1")
    c.wait(240)
    assert "diverged" in c.errors.get("sample", ""), c.errors


def test_training_live_frames_pause_resume_and_checkpoint(tmp_path):
    c = _ready("rotating-ou", duration=20.0, steps=100_000)
    assert c.start()
    end = time.monotonic() + 120
    while time.monotonic() < end and (c.frame is None or c.step < 30):
        c.poll()
        time.sleep(0.05)
    f = c.frame
    assert f is not None and f.b_irr.shape == (2, len(c.sample.ys), len(c.sample.xs))
    assert np.isfinite(f.potential).all() and math.isfinite(f.rate)
    assert "model e_p" in c.status
    assert c.pause()
    c.wait(60)
    assert c.phase == "paused"
    blob = c.checkpoint_bytes()
    at = c.step
    c2 = StochasticController()
    c2.apply_preset("rotating-ou")
    c2.duration = 20.0
    c2.wait(240)
    assert c2.load_checkpoint(blob, "onsager.pt"), c2.errors
    assert c2.step == at and c2.frame is not None
    assert c.resume()
    end = time.monotonic() + 60
    while time.monotonic() < end and c.step <= at + 5:
        c.poll()
        time.sleep(0.05)
    assert c.step > at + 5
    c.stop()
    c.wait(60)
    assert c.phase == "stopped"
    assert not c2.load_checkpoint(b"not a checkpoint", "bad.pt") and c2.errors.get("checkpoint")
    c.close()
    c2.close()


def test_the_view_draws_the_sample_and_the_model():
    from explorer.views.stochastic import StochasticPanel

    c = StochasticController(duration=20.0, steps=40)
    c.apply_preset("double-well")
    v = StochasticPanel(c, sync_url=False)
    c.wait(240)
    v._poll()
    img = v.m_pot_data.image.data["image"][0]
    assert img.shape == (c.bins, c.bins) and np.isfinite(img).sum() > 0.8 * img.size
    assert len(v.m_sig_data.shafts.data["x0"]) > 50 and v.m_pot_data.contours.data["xs"]
    assert "samples" in v.summary.object and len(v.c_marginal.sources["hist"].data["top"]) == c.bins
    assert c.start()
    c.wait(180)
    v._poll()
    assert c.phase == "done" and c.frame is not None
    assert np.isfinite(v.m_pot_model.image.data["image"][0]).all()
    assert len(v.m_irr.shafts.data["x0"]) > 50 and "model" in v.summary.object
    v.close()
