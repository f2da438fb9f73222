"""The latent-dynamics model (explorer.models.latent): shapes, hand-set dynamics analysed by
the core, the CpAE filter regulariser, measures, checkpoints and configuration errors."""

import math

import pytest
import torch

from explorer.core.analysis.fixed_points import fixed_points
from explorer.core.errors import ParameterError, ShapeError
from explorer.core.render import render_scene
from explorer.models.latent import (LatentConfig, LatentDynamicsModel, continuity_penalty,
                                    encode_decode_attractors, filter_continuity,
                                    latent_jump_ratio, latent_jumps, latent_state_correlation)
from explorer.training.checkpoint import load_checkpoint
from explorer.training.latent import (dominant_frequency, free_run_period, generate,
                                      latent_picture, latent_summary, load_latent_run,
                                      make_latent_run)


def _model(**kw):
    return LatentDynamicsModel(LatentConfig(**{"size": 16, "channels": 4, **kw}))


@pytest.mark.parametrize("ae", ["cae", "cpae"])
@pytest.mark.parametrize("dyn", ["ode", "koopman"])
def test_shapes(ae, dyn):
    torch.manual_seed(0)
    m = _model(autoencoder=ae, dynamics=dyn, latent=3, frames_in=2)
    frames = torch.rand(10, 16, 16)
    w = m.windows(frames)
    assert w.shape == (9, 2, 16, 16) and torch.equal(w[3, 1], frames[4])
    z = m.encode(w)
    assert z.shape == (9, 3)
    assert m.encode(w.reshape(3, 3, 2, 16, 16)).shape == (3, 3, 3)
    img = m.decode(z).detach()
    assert img.shape == (9, 16, 16) and float(img.min()) >= 0 and float(img.max()) <= 1
    assert m(w).shape == (9, 16, 16)
    assert m.field(z).shape == z.shape and m.step(z).shape == z.shape
    assert m.rollout(z[:4], 5).shape == (6, 4, 3)
    assert m.encode_decode(z).shape == z.shape
    assert torch.allclose(m.encode_decode_field(z), m.encode_decode(z) - z)
    assert (m.koopman_eigenvalues() is None) == (dyn == "ode")
    with pytest.raises(ShapeError):
        m.encode(torch.rand(4, 3, 16, 16))           # wrong frames_in
    with pytest.raises(ShapeError):
        m.decode(torch.rand(4, 2))                   # wrong latent size
    with pytest.raises(ShapeError):
        m.windows(torch.rand(1, 16, 16))


def test_same_seed_same_weights_and_encode_decode_uses_a_still_window():
    a, b = _model(seed=3), _model(seed=3)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    m = _model(frames_in=2)
    z = torch.randn(5, 2)
    img = m.decode(z)
    still = torch.stack([img, img], 1)               # (5, 2, H, W): the frame repeated
    assert torch.allclose(m.encode_decode(z), m.encode(still))


def test_hand_set_koopman_map_eigenvalues_and_fixed_point():
    m = _model(dynamics="koopman", dt=0.1)
    th, r = 0.3, 0.9
    K = r * torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    c = torch.tensor([0.2, -0.1])
    m.koopman.set_map(K, c)
    ev = m.koopman_eigenvalues()
    assert torch.allclose(ev.abs(), torch.full((2,), r, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(ev.angle().abs(), torch.full((2,), th, dtype=torch.float64), atol=1e-6)
    z = torch.randn(4, 2)
    assert torch.allclose(m.step(z), z @ K.T + c, atol=1e-6)
    assert torch.allclose(m.field(z), (z @ K.T + c - z) / 0.1, atol=1e-5)
    system = m.as_system(x0=torch.zeros(2))
    assert system.is_map
    fps = fixed_points(system, n_starts=32, box=(-torch.ones(2) * 3, torch.ones(2) * 3),
                       generator=torch.Generator().manual_seed(0))
    star = torch.linalg.solve(torch.eye(2, dtype=torch.float64) - K.double(), c.double())
    assert len(fps) == 1 and torch.allclose(fps[0].x, star, atol=1e-6)
    assert fps[0].type == "stable focus" and fps[0].stable
    assert torch.allclose(fps[0].eigenvalues.abs(), torch.full((2,), r, dtype=torch.float64),
                          atol=1e-6)


def test_hand_set_linear_ode_analysed_by_the_core():
    m = _model(dynamics="ode", dt=0.05, substeps=2)
    omega, gamma = 2.0, 0.1
    A = torch.tensor([[0.0, 1.0], [-omega ** 2, -gamma]])
    b = torch.tensor([0.5, -0.3])
    lin = torch.nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(A)
        lin.bias.copy_(b)
    m.vector_field.net = lin                         # f(z) = A z + b (shift 0, scale 1)
    z = torch.randn(3, 2, dtype=torch.float64)
    m = m.double()
    assert torch.allclose(m.field(z), z @ A.double().T + b.double())
    # one frame of RK4 substeps against the exact flow exp(A dt)
    star = -torch.linalg.solve(A.double(), b.double())
    exact = (z - star) @ torch.linalg.matrix_exp(0.05 * A.double()).T + star
    assert torch.allclose(m.step(z), exact, atol=1e-8)
    system = m.as_system(x0=torch.zeros(2))
    assert not system.is_map
    fps = fixed_points(system, n_starts=16, box=(-torch.ones(2) * 2, torch.ones(2) * 2),
                       generator=torch.Generator().manual_seed(0))
    assert len(fps) == 1 and torch.allclose(fps[0].x, star, atol=1e-8)
    assert fps[0].type == "stable focus"
    assert torch.allclose(fps[0].eigenvalues.real, torch.full((2,), -gamma / 2,
                                                               dtype=torch.float64), atol=1e-8)
    # the free-run period of the undamped oscillator is 2 pi / omega
    with torch.no_grad():
        lin.weight[1, 1] = 0.0
    m.vector_field.net = lin.double()
    T = free_run_period(m, torch.tensor([1.0, 0.0], dtype=torch.float64), steps=400)
    assert T == pytest.approx(2 * math.pi / omega, rel=1e-3)


def _pairwise_reference(w: torch.Tensor) -> torch.Tensor:
    """The authors' continuous_regu (AE_model.py) written out as a double loop."""
    wp = torch.nn.functional.pad(w, (1, 1, 1, 1))
    kh, kw = wp.shape[-2:]
    ys = torch.linspace(0, 1, kh, dtype=torch.float64)
    xs = torch.linspace(0, 1, kw, dtype=torch.float64)
    total, n = 0.0, 0
    for i in range(kh):
        for j in range(kw):
            for k in range(kh):
                for l in range(kw):
                    d2 = float((ys[i] - ys[k]) ** 2 + (xs[j] - xs[l]) ** 2)
                    total = total + (wp[..., i, j] - wp[..., k, l]) ** 2 * math.exp(-d2 / 10)
                    n += 1
    return 2 * (total / n).mean()


def test_filter_continuity_matches_the_reference_formula():
    torch.manual_seed(1)
    w = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    assert float(filter_continuity(w)) == pytest.approx(float(_pairwise_reference(w)), rel=1e-10)


def test_continuity_penalty_constant_versus_rough_filters():
    k = 14
    zero = torch.zeros(1, 1, k, k)
    const = torch.ones(1, 1, k, k)
    rough = torch.sign(torch.randn(1, 1, k, k, generator=torch.Generator().manual_seed(0)))
    assert float(filter_continuity(zero)) == 0.0
    assert float(filter_continuity(const, pad=False)) == pytest.approx(0.0, abs=1e-12)
    assert float(filter_continuity(rough, pad=False)) > 1.0
    # padded (the authors' form): a constant filter's border jumps to 0, a rough one costs more
    assert 0 < float(filter_continuity(const)) < float(filter_continuity(rough))
    assert float(filter_continuity(2 * rough)) == pytest.approx(4 * float(filter_continuity(rough)))
    m = _model(size=28, autoencoder="cpae")
    assert m.first_conv.kernel_size == (14, 14) and len(m.early_convs) == 2
    with torch.no_grad():
        for conv in m.early_convs:
            conv.weight.fill_(0.0)
    assert float(continuity_penalty(m).detach()) == 0.0
    with torch.no_grad():
        m.first_conv.weight.copy_(torch.sign(torch.randn_like(m.first_conv.weight)))
    assert float(continuity_penalty(m).detach()) > 0.1
    assert _model(autoencoder="cae").config.continuity == 0.0
    assert _model(autoencoder="cpae").config.continuity == 1.0


def test_measures():
    N = 40
    t = torch.arange(3 * N, dtype=torch.float64) * 2 * math.pi / N
    circle = torch.stack([torch.cos(t), torch.sin(t)], 1)
    assert latent_jump_ratio(circle) == pytest.approx(2 * math.sin(math.pi / N), rel=1e-9)
    assert latent_jumps(circle).shape == (3 * N - 1,)
    bad = circle.clone()
    bad[50:] += torch.tensor([3.0, 0.0])
    assert latent_jump_ratio(bad) > 1.0
    states = torch.stack([torch.cos(t), -torch.sin(t), torch.zeros_like(t)], 1)
    z = circle @ torch.tensor([[2.0, 1.0], [0.5, -1.0]], dtype=torch.float64) + 3.0
    corr = latent_state_correlation(z, states, variables=("x", "v", "c"))
    assert corr.linear[0] == pytest.approx(1.0) and corr.linear[1] == pytest.approx(1.0)
    assert math.isnan(corr.linear[2]) and math.isnan(corr.best[2])   # constant: nothing to encode
    assert corr.variables == ("x", "v", "c") and 0.8 < corr.best[0] <= 1.0
    ts = torch.arange(400) * 0.05
    assert dominant_frequency(torch.sin(2.0 * ts + 0.3), 0.05) == pytest.approx(2.0, rel=2e-3)


def test_encode_decode_attractors_of_an_untrained_model_are_well_formed():
    torch.manual_seed(0)
    m = _model()
    att = encode_decode_attractors(m, (-torch.ones(2), torch.ones(2)), n=5, iters=20)
    assert att.starts.shape == (25, 2) and att.ends.shape == (25, 2)
    assert att.labels.shape == (25,) and att.points.shape[1] == 2
    assert len(att.basin) == len(att.points)
    if len(att.points):
        assert float(att.basin.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [
    {"size": 8}, {"size": 65}, {"latent": 1}, {"latent": 9}, {"frames_in": 0},
    {"autoencoder": "vae"}, {"dynamics": "sde"}, {"dt": 0.0}, {"dt": "fast"},
    {"continuity": -1.0}, {"channels": 2}, {"kernel": 40}, {"seed": 1.5}])
def test_bad_configs_raise_parameter_errors(bad):
    with pytest.raises(ParameterError):
        LatentConfig(**{"size": 28, **bad})


def test_config_round_trip_and_unknown_fields():
    c = LatentConfig(size=24, latent=3, autoencoder="cae", dynamics="koopman", dt=0.2)
    assert LatentConfig.from_dict(c.as_dict()) == c
    with pytest.raises(ParameterError, match="unknown"):
        LatentConfig.from_dict({**c.as_dict(), "colour": "red"})
    with pytest.raises(ParameterError, match="unknown latent model"):
        make_latent_run(torch.rand(12, 16, 16), model="vae")
    with pytest.raises(ParameterError, match="unknown option"):
        make_latent_run(torch.rand(12, 16, 16), colour="red")


def _tiny_run(frames, **kw):
    return make_latent_run(frames, model=kw.pop("model", "cpae"), channels=4, steps=12,
                           ae_steps=6, batch=3, horizon=2, eval_every=4, seed=2, **kw)


@pytest.mark.parametrize("model", ["cpae", "koopman", "latent-ode"])
def test_checkpoint_round_trip_of_uploaded_frames(model, tmp_path):
    torch.manual_seed(0)
    frames = torch.rand(14, 16, 16)
    straight = _tiny_run(frames, model=model)
    straight.run(12)
    first = _tiny_run(frames, model=model)
    first.run(7)                                     # two-step: inside the dynamics fit
    path = first.save(tmp_path / "latent.pt")
    raw = torch.load(path, weights_only=True)        # plain data and tensors only
    assert raw["task"]["name"] == "latent" and raw["model"]["kind"] == "latent-dynamics"
    assert torch.equal(raw["task_state"]["frames"], frames)
    ck = load_checkpoint(path)
    assert ck.task_config["data"]["settings"] is None
    resumed = load_latent_run(path)
    assert resumed.step_count == 7 and resumed.model.config == first.model.config
    for a, b in zip(resumed.model.state_dict().values(), first.model.state_dict().values()):
        assert torch.equal(a, b)
    resumed.run(5)
    assert resumed.history["loss"] == pytest.approx(straight.history["loss"], rel=1e-5)
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_rendered_run_is_rebuilt_from_its_settings(tmp_path):
    fs = render_scene("spring", size=16, steps=20, dt=0.1, seed=1, device="cpu")
    loop = _tiny_run(fs, model="koopman")
    loop.run(3)
    path = loop.save(tmp_path / "spring.pt")
    raw = torch.load(path, weights_only=True)
    assert "frames" not in raw["task_state"]         # the settings suffice
    back = load_latent_run(path)
    assert torch.equal(back.task.data.frames, fs.frames)
    assert back.task.data.states is not None and back.task.data.scene == "spring"
    s = latent_summary(back)
    assert s["model"] == "koopman" and s["steps"] == 3 and len(s["koopman_eigenvalues"]) == 2
    import json
    json.dumps(s)                                    # plain data
    g = generate(back, 6, start=2)
    assert g["frames"].shape == (7, 16, 16) and g["frames"].dtype.name == "float32"
    assert g["latents"].shape == (7, 2) and g["t"].shape == (7,)
    assert g["true_frames"].shape == (7, 16, 16) and g["true_states"].shape == (7, 2)
    p = latent_picture(back, grid=6)
    assert p.field.shape == (6, 6, 2) and p.encode_decode.shape == (6, 6, 2)
    assert p.latents.shape == (19, 2) and p.eigenvalues.shape == (2,)
    assert p.prediction.shape == p.truth.shape and p.strip_true.shape == p.strip_recon.shape
