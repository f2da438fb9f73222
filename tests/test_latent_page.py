"""The Latent dynamics page headless: the controller's frames, presets, URL, uploads, a short
live run with its picture and analysis, the CAE/CpAE comparison, and the CLI (`train latent`,
`generate`). The known answers of the models are in test_latent_training.py; here the page's
plumbing, checked against what it must show."""

import io
import json
import math
import time

import numpy as np
import pytest
import torch

from explorer.cli import main
from explorer.controllers.latent import PICTURE, PRESETS, LatentController

SMALL = dict(size=16, n_frames=120, train_batch=8)


def ctl(**kw):
    c = LatentController(**{**SMALL, **kw})
    c.request_data()                     # the view asks for it when it is built
    c.wait(60)
    return c


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_frames_follow_the_settings_and_the_pendulum_angle():
    c = ctl()
    fs = c.data
    assert tuple(fs.frames.shape) == (120, 16, 16)
    assert fs.variables[0] == "theta" and fs.states.shape == (120, 2)
    assert fs.states[0, 0].item() == pytest.approx(c.amplitude)   # released from the amplitude
    assert "frames: Pendulum, 120 frames of 16×16" in c.status
    c.scene = "spring"
    c.wait(60)
    assert c.data.scene == "spring" and c.data.variables == ("x", "v")
    c.size = 64
    c.wait(60)
    c.n_frames = 20_000                  # 64 × 64 × 20,000 is over the pixel limit: refused
    c.wait(10)
    assert "data" in c.errors and "\n" not in c.errors["data"]
    assert c.data.scene == "spring" and c.data.length == 120


def test_presets_and_links():
    for key, p in PRESETS.items():
        c = LatentController(auto=False)
        assert c.apply_query({"page": ["latent"], "preset": [key]}) == []
        assert c.preset == key
        for k, v in p.settings.items():
            assert getattr(c, k) == v, (key, k)
        assert c.to_query() == {"preset": key}
    c = LatentController(auto=False)
    problems = c.apply_query({"page": "latent", "scene": "spring", "size": "24", "latent": "99",
                              "model": "koopman", "cw": "nan?"})
    assert (c.scene, c.size, c.model) == ("spring", 24, "koopman")
    assert len(problems) == 2 and c.latent == 2 and "Not used from the link" in c.status
    assert c.to_query()["scene"] == "spring"
    # the square's width travels in the link and reaches the renderer (why-jumps: 2 px)
    c = LatentController(auto=False)
    assert c.apply_query({"page": "latent", "scene": "moving-square", "width": "2"}) == []
    assert c.render_settings()["width"] == 2.0 and c.check()["width"] == 2.0
    assert c.to_query()["width"] == "2.0" or float(c.to_query()["width"]) == 2.0
    c.scene = "pendulum"
    assert "width" not in c.render_settings()           # only blob and square scenes have one


def test_uploads_accepted_and_refused_in_one_line():
    c = ctl()
    good = np.random.default_rng(0).random((40, 16, 16)).astype(np.float32)
    assert c.load_frames(_npy(good), "clip.npy")
    assert c.source == "upload" and c.file_name == "clip.npy" and c.data.length == 40
    assert c.data.states is None
    before = c.data
    bad = {"bad.npy": b"\x93NUMPY\x01\x00garbage", "wide.npy": _npy(np.zeros((40, 16, 20), np.float32)),
           "nan.npy": _npy(np.full((40, 16, 16), np.nan, np.float32)), "x.txt": b"1,2,3",
           "obj.npy": _npy(np.array([{"a": 1}] * 10, dtype=object))}
    for name, content in bad.items():
        assert not c.load_frames(content, name)
        msg = c.errors["data"]
        assert name in msg and "\n" not in msg and "Traceback" not in msg, msg
        assert c.data is before                          # nothing else changed
    # a square upload of the wrong size for the models is refused before training
    assert not c.load_frames(_npy(np.zeros((40, 12, 12), np.float32)), "tiny.npy")
    assert "16 to 64" in c.errors["data"]


def test_short_run_shows_a_picture_and_the_analysis_finds_fixed_points():
    c = ctl(steps=40, model="koopman")
    assert c.start()
    c.wait(240)
    assert c.phase == "done", c.status
    p = c.picture
    assert p is not None and p.step == 40
    N = c.data.length - 1                               # two frames per window
    assert p.latents.shape == (N, 2) and p.t.shape == (N,)
    G = PICTURE["grid"]
    assert p.field.shape == (G, G, 2) and p.encode_decode.shape == (G, G, 2)
    # the picture the run ended on is whole: details and the encode–decode field
    assert p.details and np.isfinite(p.encode_decode).all() and p.prediction is not None
    assert p.strip_true.shape[1:] == (16, 16) and p.strip_recon.shape == p.strip_true.shape
    assert p.eigenvalues is not None and p.eigenvalues.shape == (2,)
    assert np.isfinite(p.true_frequency)                 # the pendulum's own frequency
    assert c.analysis is not None and c.analysis.step == 40
    # the Koopman map is linear: exactly one fixed point, whose eigenvalues are those of K
    assert len(c.analysis.fixed) == 1
    ev = np.sort_complex(c.analysis.fixed[0].eigenvalues.numpy())
    assert np.allclose(ev, np.sort_complex(p.eigenvalues), atol=1e-6)
    assert "reconstruction MSE" in c.final_text()


def test_changing_the_scene_stops_the_run_and_clears_the_picture():
    c = ctl(steps=5000)
    assert c.start()
    for _ in range(600):
        c.poll()
        if c.step > 2:
            break
        time.sleep(0.1)
    assert c.step > 2
    c.scene = "spring"
    assert "settings changed" in c.status
    c.wait(60)
    assert c.phase == "stopped" and c.picture is None and c.data.scene == "spring"


def test_compare_reports_both_models():
    c = ctl(scene="moving-square", size=16, n_frames=100, steps=20)
    c.request_compare()
    c.wait(240)
    cmp_ = c.compare
    assert cmp_ is not None, c.status
    assert set(cmp_.latents) == {"cae", "cpae"} and cmp_.steps == 20
    for k in ("cae", "cpae"):
        z = cmp_.latents[k]
        assert z.shape == (99, 2)
        # the jump measure is the largest step over the spread of the trajectory
        spread = math.sqrt(z.var(0).sum())
        assert cmp_.jumps[k] == pytest.approx(np.linalg.norm(np.diff(z, axis=0), axis=1).max() / spread,
                                              rel=1e-6)
    assert "CAE" in c.status and "CpAE" in c.status


def test_cli_train_latent_and_generate(tmp_path, capsys):
    out = tmp_path / "run.pt"
    rc = main(["train", "latent", "--system", "spring", "--size", "16", "--frames", "80",
               "--model", "koopman", "--steps", "12", "--batch", "4", "--quiet", "--json",
               "--out", str(out)])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["model"] == "koopman" and s["steps"] == 12 and s["scene"] == "spring"
    assert len(s["koopman_eigenvalues"]) == 2
    ck = torch.load(out, weights_only=True)
    assert ck["format"] == "dynamics-explorer/checkpoint"
    gen = tmp_path / "gen.npz"
    assert main(["generate", str(out), "--steps", "30", "--out", str(gen), "--json"]) == 0
    g = json.loads(capsys.readouterr().out)
    assert g["shape"] == [31, 16, 16] and g["latent_shape"] == [31, 2]
    with np.load(gen) as z:
        assert z["frames"].shape == (31, 16, 16) and z["latents"].shape == (31, 2)
        assert np.isfinite(z["frames"]).all()
    # bad files: exit 2 and one line on stderr
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an array")
    assert main(["train", "latent", "--data", str(bad), "--steps", "2", "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.npy" in err and len(err.splitlines()) == 1
    assert main(["train", "latent", "--steps", "2", "--out", str(tmp_path / "x.pt")]) == 2
    assert main(["train", "latent", "--system", "pendulum", "--size", "8", "--out",
                 str(tmp_path / "x.pt")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2
