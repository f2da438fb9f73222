"""The CLI through a subprocess: outputs, the JSON contract and the error cases."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest


def run(*args, check_rc=0):
    p = subprocess.run([sys.executable, "-m", "explorer", *args], capture_output=True, text=True,
                       timeout=300, env={**__import__("os").environ, "EXPLORER_DEVICE": "cpu"})
    if check_rc is not None:
        assert p.returncode == check_rc, (p.returncode, p.stdout, p.stderr)
    return p


def test_systems_json_contract():
    out = json.loads(run("systems", "--json").stdout)
    systems = {s["name"]: s for s in out["systems"]}
    assert len(systems) >= 30
    lor = systems["lorenz63"]
    assert lor["kind"] == "flow" and lor["dimension"] == 3 and lor["origin"] == "builtin"
    assert [p["name"] for p in lor["parameters"]] == ["sigma", "rho", "beta"]
    assert lor["lyapunov_reference"]["exponents"][0] == pytest.approx(0.9056)
    assert systems["henon"]["kind"] == "map"
    for s in out["systems"]:
        assert set(s) >= {"name", "kind", "dimension", "origin", "parameters", "lyapunov_reference"}
    assert "available" in out["dysts"]


def test_systems_table():
    out = run("systems").stdout
    assert "lorenz63" in out and "henon" in out


def test_simulate_npz_single_and_batched(tmp_path):
    f = tmp_path / "a.npz"
    run("simulate", "lorenz63", "--steps", "200", "--out", str(f))
    d = np.load(f)
    assert d["t"].shape == (201,) and d["x"].shape == (201, 3)
    np.testing.assert_allclose(d["x"][0], [-8.0, 7.0, 27.0])
    np.testing.assert_allclose(d["t"][1] - d["t"][0], 0.01)
    run("simulate", "henon", "--steps", "50", "--batch", "4", "--out", str(f))
    d = np.load(f)
    assert d["x"].shape == (51, 4, 2)


def test_simulate_csv_with_params(tmp_path):
    f = tmp_path / "a.csv"
    run("simulate", "lorenz63", "--param", "rho=15", "--steps", "10", "--dt", "0.005", "--out", str(f))
    lines = f.read_text().splitlines()
    assert lines[0] == "t,x,y,z" and len(lines) == 12
    t1 = float(lines[2].split(",")[0])
    assert t1 == pytest.approx(0.005)


def test_simulate_custom_map_matches_builtin(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    run("simulate", "--map", "x' = 1 - a*x**2 + y; y' = b*x", "--param", "a=1.4", "--param", "b=0.3",
        "--x0", "0.1,0.1", "--steps", "100", "--out", str(a))
    run("simulate", "henon", "--x0", "0.1,0.1", "--steps", "100", "--out", str(b))
    # chaos amplifies rounding differences (x**2 vs x*x): compare the first 20 iterates
    np.testing.assert_allclose(np.load(a)["x"][:20], np.load(b)["x"][:20], rtol=1e-9)


def test_lyapunov_json_contract():
    rec = json.loads(run("lyapunov", "henon", "--json").stdout)
    assert rec["system"] == "henon"
    assert rec["params"] == {"a": 1.4, "b": 0.3}
    lam = rec["exponents"]
    assert lam == sorted(lam, reverse=True)
    assert lam[0] == pytest.approx(0.4192, rel=0.02)
    assert sum(lam) == pytest.approx(math.log(0.3), rel=0.005)
    assert rec["kaplan_yorke_dimension"] == pytest.approx(1 + 0.4192 / 1.6232, rel=0.02)


def test_lyapunov_custom_flow():
    rec = json.loads(run("lyapunov", "--flow", "dx/dt = -k*x; dy/dt = -2*y", "--param", "k=0.5",
                         "--x0", "1,1", "--steps", "500", "--batch", "2", "--json").stdout)
    assert rec["exponents"] == pytest.approx([-0.5, -2.0], abs=1e-6)


def test_lyapunov_of_a_diverging_system_says_why_and_fails():
    p = run("lyapunov", "--flow", "dx/dt = x*x + 1; dy/dt = -y", "--json", check_rc=1)
    rec = json.loads(p.stdout)
    assert rec["status"] == "diverged" and rec["exponents"] == [None, None]
    assert "diverged" in rec["message"] and "no Lyapunov exponents" in rec["message"]
    assert p.stderr.strip().splitlines() == [f"dynamics-explorer: error: {rec['message']}"]


def test_an_absurd_size_is_refused_before_memory_is_taken(tmp_path):
    import resource
    code = ("import resource, sys; from explorer.cli import main; "
            "import explorer.core.simulate, explorer.core.registry as r; r.system_class('lorenz63')(); "
            "main(['simulate', 'lorenz63', '--steps', '10', '--out', 'y.npz']); "       # imports
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            "rc = main(['simulate', 'lorenz63', '--batch', '10000000', '--steps', '100000000', "
            "'--out', 'x.npz']); "
            "print(rc, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    rc, grown_kb = p.stdout.splitlines()[-1].split()
    assert rc == "2" and "over the limit" in p.stderr
    assert int(grown_kb) < 50_000, f"the refusal took {int(grown_kb) / 1024:.0f} MB"   # was ~700 MB
    del resource


@pytest.mark.parametrize("args,needle", [
    (("simulate", "nosuchsystem", "--out", "x.npz"), "unknown system"),
    (("simulate", "lorenz63", "--param", "rho=1e9", "--out", "x.npz"), "outside its allowed range"),
    (("simulate", "lorenz63", "--param", "rho", "--out", "x.npz"), "name=value"),
    (("simulate", "lorenz63", "--param", "nope=1", "--out", "x.npz"), "no parameter 'nope'"),
    (("simulate", "lorenz63", "--out", "x.txt"), ".npz or .csv"),
    (("simulate", "lorenz63", "--out", "/no/such/dir/x.npz"), "does not exist"),
    (("simulate", "lorenz63", "--batch", "1000000000", "--out", "x.npz"), "limit"),
    (("simulate", "lorenz63", "--steps", "-5", "--out", "x.npz"), "steps"),
    (("simulate", "--flow", "dx/dt = x +* 2", "--out", "x.npz"), "line 1, column 12"),
    (("simulate", "--flow", "dx/dt = rh0*x", "--param", "rho=1", "--out", "x.npz"), "rh0"),
    (("simulate", "--map", "dx/dt = x", "--out", "x.npz"), "flow"),
    (("simulate", "lorenz63", "--x0", "1,2", "--out", "x.npz"), "dimension 3"),
    (("lyapunov", "lorenz63", "--device", "cuda:7"), "cuda"),
    (("lyapunov",), "exactly one"),
    (("simulate", "lorenz63"), "--out"),
    (("frobnicate",), "invalid choice"),
    (("train", "dsr", "--out", "run.pt"), "exactly one of --system"),
    (("train", "dsr", "--system", "lorenz", "--out", "run.txt"), ".pt"),
    (("train", "dsr", "--system", "lorenz", "--model", "lstm", "--out", "run.pt"), "invalid choice"),
    (("train", "dsr", "--data", "missing.csv", "--out", "run.pt"), "missing.csv"),
    (("train", "dsr", "--system", "lorenz", "--target-dstsp", "-1", "--out", "run.pt"), "target-dstsp"),
    (("generate", "missing.pt", "--out", "gen.npz"), "missing.pt"),
])
def test_user_errors_exit_2_with_one_line(args, needle, tmp_path):
    p = subprocess.run([sys.executable, "-m", "explorer", *args], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert p.returncode == 2, (p.stdout, p.stderr)
    err = p.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert needle.lower() in err.lower(), err


def test_train_dsr_and_generate(tmp_path):
    """A tiny run end to end: a checkpoint that resumes, then a free run in data units."""
    ck = tmp_path / "run.pt"
    p = run("train", "dsr", "--system", "lorenz", "--model", "alrnn", "--latent", "6",
            "--steps", "4", "--length", "3000", "--seq-len", "40", "--batch", "4",
            "--metrics-every", "4", "--seed", "3", "--out", str(ck), "--json")
    summary = json.loads(p.stdout)
    assert summary["steps"] == 4 and summary["model"] == "alrnn" and summary["status"] == "done"
    assert summary["skipped"] == 0 and summary["target_reached"] is False
    assert summary["target_dstsp"] == 0.3                            # the default target
    assert math.isfinite(summary["final_loss"]) and "d_stsp" in summary["metrics"]
    assert "step 4/4" in p.stderr                                   # progress on stderr
    # four steps make no reconstruction, and the CLI says so: stderr and the summary
    v = summary["verdict"]
    assert v["reconstructs"] is False and v["kind"] in ("poor match", "fixed point", "diverged")
    assert v["reference"] == "noise-free reference" and v["threshold"] == 2.0
    assert f"warning: {ck} is not a reconstruction: {v['reason']}" in p.stderr
    out = tmp_path / "gen.npz"
    p = run("generate", str(ck), "--steps", "300", "--out", str(out), "--json")
    g = json.loads(p.stdout)
    assert g["shape"] == [301, 3] and g["verdict"]["reconstructs"] is False
    assert "warning: this free run is not a reconstruction" in p.stderr
    d = np.load(out)
    assert d["x"].shape == (301, 3) and d["t"].shape == (301,)
    assert np.all(np.isfinite(d["x"]))
    # data units, not standardised: the first state is the (noisy) Lorenz data's scale
    assert 5 < np.abs(d["x"][0]).max() < 60


def test_train_dsr_on_a_file(tmp_path):
    t = np.linspace(0, 60, 1500)
    csv = tmp_path / "osc.csv"
    np.savetxt(csv, np.column_stack([np.sin(t), np.cos(1.3 * t)]), delimiter=",", header="a,b",
               comments="")
    p = run("train", "dsr", "--data", str(csv), "--steps", "2", "--seq-len", "30", "--batch", "2",
            "--metrics-every", "0", "--quiet", "--out", str(tmp_path / "r.pt"), "--json")
    assert json.loads(p.stdout)["steps"] == 2
    # --quiet: no progress lines; the verdict's warning (two steps) is the only line
    assert p.stderr.count("\n") == 1 and "warning:" in p.stderr and "not a reconstruction" in p.stderr


def test_verdict_of_the_true_system_passes_and_a_fixed_point_fails_in_the_cli(tmp_path):
    """`generate` judges a free run against the checkpoint's data with the same function."""
    import torch

    from explorer.training.verdict import reconstruction_verdict
    from explorer.training import from_system
    from explorer.core.registry import get_system
    data = from_system(get_system("lorenz63"), steps=8000, noise=0.0)
    other = data.normalisation.apply(from_system(get_system("lorenz63"), steps=8000, transient=54_321,
                                                 noise=0.0).raw())
    assert reconstruction_verdict(data.x, other).ok
    assert reconstruction_verdict(data.x, torch.zeros(2000, 3)).line().startswith(
        "not a reconstruction: the free run settles on a fixed point")


def test_train_dsr_stops_on_its_target_only_for_a_reconstruction(tmp_path, monkeypatch):
    """A free run stuck on a fixed point can score D_stsp below the target (its few states sit
    inside the attractor's occupied cells): training must go on past such an evaluation."""
    import explorer.cli as cli
    import explorer.training as training
    from explorer.training.loop import TrainEvent
    from explorer.training.verdict import judge

    evaluations = [{"d_stsp": 0.9, "d_stsp_clean": 0.25, "d_h": 0.01, "spread": 0.013},  # fixed pt
                   {"d_stsp": 0.9, "d_stsp_clean": 0.4, "d_h": 0.01, "spread": 0.6},     # poor
                   {"d_stsp": 0.9, "d_stsp_clean": 0.28, "d_h": 0.01, "spread": 0.7},    # good
                   {"d_stsp": 0.9, "d_stsp_clean": 0.2, "d_h": 0.01, "spread": 0.7}]

    class FakeTrainer:
        def __init__(self, data, config):
            self.config, self.step_count, self.seconds, self.skipped = config, 0, 1.0, 0
            self.rollbacks, self.best = 0, None
            self.history, self.metric_history = {"loss": [1.0]}, []

        def run(self, n, callbacks=(), stop=None):
            ev = None
            for k, m in enumerate(evaluations, 1):
                self.step_count = 500 * k
                self.metric_history.append(m)
                ev = TrainEvent(500 * k, {"loss": 1.0}, m, None, 1.0, None)
                for cb in callbacks:
                    cb(ev)
                if stop.is_set():
                    return TrainEvent(ev.step, {}, None, None, 1.0, None, status="stopped")
            return ev

        def save(self, path):
            path.write_bytes(b"")

        def verdict(self):
            return judge(0.28, 0.01, 0.7, reference="noise-free reference")

    monkeypatch.setattr(training, "Trainer", FakeTrainer)
    monkeypatch.setattr(cli, "dsr_setup", lambda args: (None, training.TrainerConfig(steps=2000)))
    args = cli.build_parser().parse_args(["train", "dsr", "--system", "lorenz63", "--quiet",
                                          "--out", str(tmp_path / "r.pt")])
    summary, _, verdict = cli.train_dsr(args)
    assert summary["target_reached"] is True and summary["steps"] == 1500
    assert summary["message"] == "reached D_stsp 0.28 <= 0.3 at step 1500"
    assert verdict.ok
