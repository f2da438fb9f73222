"""Controllers of the Attractors page, without a browser: bounds, supersession, URL state."""

import threading
import time

import numpy as np
import pytest

from explorer.controllers import PRESETS, AttractorController, JobRunner, LiveEnsemble
from explorer.controllers.attractors import MAX_APP_WORK
from explorer.core.errors import ParameterError, SizeLimitError
from explorer.core.registry import get_system


@pytest.fixture
def ctrl():
    c = AttractorController(auto=False)
    yield c
    c.close()


# ------------------------------------------------------------------ parameter bounds
def test_parameter_outside_bounds_is_refused_with_range(ctrl):
    with pytest.raises(ParameterError, match=r"\[0, 500\]"):
        ctrl.set_value("rho", 1000.0)
    assert ctrl.values["rho"] == 28.0
    ctrl.set_value("rho", 35.5)
    assert ctrl.values["rho"] == 35.5
    with pytest.raises(ParameterError, match="no parameter"):
        ctrl.set_value("nope", 1.0)


def test_page_settings_have_bounds(ctrl):
    with pytest.raises(ValueError):
        ctrl.n_traj = 0
    with pytest.raises(ValueError):
        ctrl.n_traj = 100_001
    with pytest.raises(ValueError):
        ctrl.dt = -0.1
    with pytest.raises(ParameterError, match="needs 3 values"):
        ctrl.set_x0([1.0, 2.0])
    with pytest.raises(ParameterError, match="finite"):
        ctrl.set_x0([1.0, float("nan"), 2.0])


def test_integer_parameter_changes_dimension(ctrl):
    ctrl.system = "lorenz96"
    ctrl.set_value("n", 8)
    assert len(ctrl.x0) == 8 and ctrl.current_system().dim == 8
    with pytest.raises(ParameterError):
        ctrl.set_value("n", 2.5)


def test_switching_system_resets_dependent_settings(ctrl):
    ctrl.system = "henon"
    assert ctrl.solver == "map" and ctrl.values == {"a": 1.4, "b": 0.3}
    assert (ctrl.x_var, ctrl.y_var) == ("x", "y") and ctrl.orbit_param == "a"
    ctrl.system = "lorenz63"
    assert ctrl.solver == "rk4" and len(ctrl.x0) == 3


# ------------------------------------------------------------------ supersession
def test_newer_job_supersedes_running_one():
    runner = JobRunner()
    started, saw_stop = threading.Event(), threading.Event()

    def slow(stop, progress):
        started.set()
        for _ in range(500):
            if stop.is_set():
                saw_stop.set()
                return "old"
            time.sleep(0.01)
        return "old (not stopped)"

    runner.submit("k", slow)
    assert started.wait(5)
    runner.submit("k", lambda stop, progress: "new")
    assert runner.wait(10)
    done = runner.poll()
    assert [d.value for d in done] == ["new"]           # the superseded result is dropped
    assert saw_stop.wait(5)                             # and the old job was told to stop


def test_admission_queues_jobs_over_the_server_limit_and_serves_the_quiet_session_first(monkeypatch):
    from explorer.controllers.jobs import Admission

    monkeypatch.setenv("EXPLORER_TEST_SLOTS", "2")
    adm = Admission(env="EXPLORER_TEST_SLOTS")
    greedy, quiet = JobRunner(admission=adm), JobRunner(admission=adm)
    gates = {k: threading.Event() for k in ("a", "b", "c", "d")}
    started: list[str] = []

    def job(key):
        def fn(stop, progress):
            started.append(key)
            while not gates[key].wait(0.01):
                if stop.is_set():
                    return None
            return key
        return fn

    def until(cond, timeout=5.0):
        end = time.monotonic() + timeout
        while not cond() and time.monotonic() < end:
            time.sleep(0.01)
        return cond()

    for k in ("a", "b", "c"):                       # one session asks for three jobs
        greedy.submit(k, job(k))
    assert until(lambda: len(started) == 2 and adm.queued == 1)
    quiet.submit("d", job("d"))                      # another session asks for one, later
    assert until(lambda: adm.queued == 2)
    assert quiet.queue_position()[1] == 0            # it holds no slot: first in line
    assert greedy.queue_position()[0].key == "c" and greedy.queue_position()[1] == 1
    gates[started[0]].set()                          # a slot frees ...
    assert until(lambda: "d" in started)             # ... and goes to the quiet session
    assert "c" not in started and adm.active == 2
    greedy.cancel("c")                               # a waiting job stops like a running one
    assert until(lambda: adm.queued == 0)
    for g in gates.values():
        g.set()
    assert greedy.wait(5) and quiet.wait(5) and adm.active == 0
    assert "c" not in started                        # it never ran


def test_a_queued_job_says_so_in_the_status_line_until_it_computes(monkeypatch):
    from explorer.controllers.base import PageController

    monkeypatch.setenv("EXPLORER_MAX_JOBS", "1")
    busy, waiting = PageController(auto=False), PageController(auto=False)
    gate = threading.Event()
    try:
        busy._submit("long", lambda stop, progress: gate.wait(10), "a long job")
        time.sleep(0.2)
        waiting._submit("lyapunov", lambda stop, progress: 1.0, "Lyapunov spectrum")
        time.sleep(0.2)
        waiting.poll()
        assert waiting.status.startswith("⏳ Lyapunov spectrum: queued, position 1")
        gate.set()
        waiting.wait(10)
        assert waiting.status.startswith("Lyapunov spectrum: done")
    finally:
        gate.set()
        busy.close()
        waiting.close()


def test_job_errors_are_messages_not_exceptions():
    runner = JobRunner(log=lambda text: None)

    def bad(stop, progress):
        raise ParameterError("rho is out of range")

    def bug(stop, progress):
        raise ZeroDivisionError("oops")

    runner.submit("a", bad)
    runner.submit("b", bug)
    runner.wait(5)
    done = {d.key: d for d in runner.poll()}
    assert done["a"].error == "rho is out of range" and not done["a"].internal
    assert done["b"].internal and "ZeroDivisionError" in done["b"].error
    runner.close()
    with pytest.raises(Exception, match="closed"):
        runner.submit("c", lambda stop, progress: 1)


def test_controller_publishes_only_the_latest_request(ctrl):
    ctrl.duration = 20.0
    ctrl.set_value("rho", 30.0)
    ctrl.request_attractor()
    ctrl.set_value("rho", 99.0)
    ctrl.request_attractor()
    ctrl.wait(60)
    assert ctrl.attractor is not None
    assert ctrl.attractor.trajectory.params["rho"] == 99.0
    assert not ctrl.jobs.running()


# ------------------------------------------------------------------ URL state
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_url_round_trip_of_every_preset(preset):
    a = AttractorController(auto=False)
    assert a.apply_preset(preset) == []
    q = a.to_query()
    b = AttractorController(auto=False)
    assert b.apply_query(q) == []
    assert b.to_query() == q
    assert b.current_system().params == a.current_system().params


def test_url_round_trip_of_edited_state(ctrl):
    ctrl.system = "rossler"
    ctrl.set_value("c", 9.0)
    ctrl.set_x0([1.0, 2.0, 0.5])
    ctrl.param.update(n_traj=50, duration=250.0, view="3D", z_var="z", azimuth=-40.0,
                      elevation=10.0, color_by="speed", section_var="x", section_value=0.0,
                      classroom=True, hidden=["solver", "dt"])
    q = ctrl.to_query()
    other = AttractorController(auto=False)
    assert other.apply_query(q) == []
    assert other.to_query() == q
    assert other.classroom and other.hidden == ["solver", "dt"]


def test_url_round_trip_of_custom_system(ctrl):
    ctrl.equations = "x' = 1 - a*x**2 + y; y' = b*x"
    ctrl.custom_params = "a = 1.3, b = 0.3"
    ctrl.system = "custom"
    q = ctrl.to_query()
    other = AttractorController(auto=False)
    assert other.apply_query(q) == []
    assert other.current_system().kind == "map" and other.to_query() == q


def test_bad_link_values_are_reported_and_skipped(ctrl):
    problems = ctrl.apply_query({"sys": "lorenz63", "p.rho": "1000", "p.sigma": "12", "n": "-3",
                                 "proj": "x,w", "x0": "1,2"})
    assert len(problems) == 4
    assert any("[0, 500]" in p for p in problems)
    assert ctrl.values["rho"] == 28.0 and ctrl.values["sigma"] == 12.0 and ctrl.n_traj == 1
    assert ctrl.apply_query({"sys": "no_such_system"})[0].startswith("system")


def test_hostile_link_values_leave_a_notice_and_reflect_no_markup(ctrl):
    problems = ctrl.apply_query({"n": "1e12", "p.rho": "nan", "dt": "-1",
                                 "sys": "<img src=x onerror=alert(1)>"}, compute=False)
    assert [p.split(":")[0] for p in problems] == ["system", "rho", "dt", "n"]
    assert "n: must be at most 100000, not 1000000000000" in problems
    assert "dt: must be greater than 1e-05, not -1.0" in problems
    assert ctrl.system == "lorenz63" and ctrl.n_traj == 1 and ctrl.values["rho"] == 28.0
    assert ctrl.notice.startswith("Not used from the link, defaults kept: system:")
    assert "<img" not in ctrl.notice and "&lt;img" in ctrl.notice
    ctrl.request_attractor()                     # the computation's status does not hide it
    ctrl.wait()
    assert ctrl.notice and "computed in" in ctrl.status
    assert ctrl.apply_query({"n": "2.5"}, compute=False) == ["n: '2.5' is not a whole number"]


# ------------------------------------------------------------------ bad input
def test_request_too_large_is_refused_with_the_limit(ctrl):
    ctrl.n_traj = 100_000
    ctrl.duration = 1e6
    ctrl.request_attractor()
    assert "limit" in ctrl.errors["attractor"] and f"{MAX_APP_WORK:.0e}" in ctrl.errors["attractor"]
    with pytest.raises(SizeLimitError):
        ctrl._steps(ctrl.current_system())


def test_custom_equation_errors_name_the_token(ctrl):
    problems = ctrl.check_custom("dx/dt = sigma*(y - x) +* 2\ndy/dt = x\ndz/dt = z", "sigma = 1")
    assert problems and "'*'" in problems[0]
    assert ctrl.check_custom(ctrl.equations, "sigma = ten")[0].startswith("parameters")
    assert ctrl.check_custom() == []


def test_diverging_system_keeps_what_was_computed(ctrl):
    ctrl.equations = "dx/dt = x**2"
    ctrl.custom_params = ""
    ctrl.system = "custom"
    ctrl.set_x0([1.0])
    ctrl.param.update(duration=2.0, transient=0.0)
    ctrl.request_attractor()
    ctrl.wait(60)
    data = ctrl.attractor
    assert data.diverged and "diverged" in data.message and "diverged" in ctrl.status
    finite = np.isfinite(data.x[:, 0, 0])
    assert finite[0] and not finite[-1]                  # computed up to the divergence
    t_div = float(data.trajectory.diverged_at[0])
    assert 0.9 < t_div < 1.01                            # x(t) = 1 / (1 - t) blows up at t = 1


def test_analysis_requests_against_known_values(ctrl):
    ctrl.system = "henon"
    ctrl.request_lyapunov()
    ctrl.request_fixed_points()
    ctrl.wait(120)
    lam = ctrl.lyapunov.exponents.tolist()
    assert abs(lam[0] - 0.4192) < 0.02 and abs(sum(lam) - np.log(0.3)) < 5e-3
    # Hénon fixed points: x = (-(1-b) ± sqrt((1-b)^2 + 4a)) / (2a)
    a, b = 1.4, 0.3
    xs = sorted(float(fp.x[0]) for fp in ctrl.fixed)
    expect = sorted((-(1 - b) + s * np.sqrt((1 - b) ** 2 + 4 * a)) / (2 * a) for s in (1, -1))
    assert np.allclose(xs, expect, atol=1e-8)


def test_orbit_zoom_history(ctrl):
    ctrl.system = "logistic"
    ctrl.param.update(orbit_low=2.8, orbit_high=4.0)
    ctrl.zoom_orbit(3.4, 3.6)
    assert (ctrl.orbit_low, ctrl.orbit_high) == (3.4, 3.6)
    ctrl.zoom_orbit(3.5, 3.55)
    assert ctrl.orbit_back() and (ctrl.orbit_low, ctrl.orbit_high) == (3.4, 3.6)
    assert ctrl.orbit_back() and (ctrl.orbit_low, ctrl.orbit_high) == (2.8, 4.0)
    assert not ctrl.orbit_back()
    ctrl.wait(120)
    vals = ctrl.orbit.values
    assert float(vals.min()) == pytest.approx(2.8) and float(vals.max()) == pytest.approx(4.0)


def test_click_sets_initial_condition(ctrl):
    ctrl.set_point({"x": 3.0, "z": 20.0})
    assert ctrl.x0 == [3.0, 7.0, 20.0]


# ------------------------------------------------------------------ live mode
def test_live_ensemble_steps_and_applies_new_parameters():
    sys_ = get_system("lorenz63")
    live = LiveEnsemble(sys_, sys_.default_x0, n=200, trail=8, steps_per_frame=3, spread=0.05)
    f0 = live.frame()
    assert f0.trails.shape == (8, 200, 3) and np.isnan(f0.trails[0]).all()
    for _ in range(10):
        f = live.step()
    assert f.index == 10 and np.isfinite(f.trails).all() and f.t == pytest.approx(0.3)
    live.set_system(sys_.with_params(rho=0.5))           # stable origin: the ensemble decays
    for _ in range(200):
        f = live.step()
    assert np.abs(f.trails[-1]).max() < np.abs(f0.trails[-1]).max()
    live.reset([1.0, 1.0, 1.0])
    assert live.frame().index == 0 and np.allclose(live.frame().trails[-1][0], 1.0)
    live.play()
    time.sleep(0.3)
    live.pause()
    assert live.frame().index > 0
    live.close()


# ------------------------------------------------------------------ live mode in the controller
def test_live_mode_follows_settings_while_playing(ctrl):
    assert ctrl.play() and ctrl.playing
    assert ctrl.live_status == "running: 1,000 trajectories"
    ctrl.set_value("rho", 15.0)                          # reaches the running ensemble
    assert ctrl.live.system.params["rho"] == 15.0 and ctrl.playing
    ctrl.live_n = 200                                    # a new size rebuilds it, still playing
    assert ctrl.live.n == 200 and ctrl.playing
    assert ctrl.live_status == "running: 200 trajectories"
    ctrl.live_speed = 5
    assert ctrl.live.steps_per_frame == 5
    with pytest.raises(ValueError):
        ctrl.live_n = 0                                  # bounds live in the declaration
    ctrl.pause()
    assert not ctrl.playing and ctrl.live_status.startswith("paused: 200 trajectories, t = ")
    live = ctrl.live
    ctrl.dt = 0.005                                      # a new time step rebuilds, paused
    assert ctrl.live is not live and not ctrl.playing and ctrl.live.dt == 0.005
    ctrl.system = "henon"                                # a new system stops live mode
    assert ctrl.live is None and ctrl.live_status == ""


def test_live_step_advances_time_and_reset_restarts(ctrl):
    ctrl.live_speed = 3
    assert ctrl.step()
    t1 = ctrl.live_frame().t
    assert t1 == pytest.approx(3 * ctrl.dt) and not ctrl.playing
    ctrl.step()
    assert ctrl.live_frame().t == pytest.approx(2 * t1)
    assert ctrl.live_status == f"paused: 1,000 trajectories, t = {2 * t1:.4g}"
    ctrl.set_x0([1.0, 2.0, 3.0])                         # a new initial condition restarts it
    frame = ctrl.live_frame()
    assert frame.index == 0 and np.allclose(frame.trails[-1][0], [1.0, 2.0, 3.0])
    ctrl.reset()
    assert ctrl.live_frame().index == 0
    ctrl.close()
    assert ctrl.live is None


def test_live_mode_of_a_map_and_a_dimension_change(ctrl):
    ctrl.system = "lorenz96"
    ctrl.step()
    ctrl.set_value("n", 6)                               # the ensemble takes the new dimension
    assert ctrl.live.system.dim == 6 and ctrl.live_frame().trails.shape[-1] == 6
    ctrl.system = "henon"
    ctrl.live_speed = 1
    assert ctrl.step() and ctrl.live_frame().t == pytest.approx(1.0)   # one iteration


def test_status_names_the_backend_and_why_a_slower_one_ran():
    from types import SimpleNamespace

    from explorer.controllers.attractors import backend_text

    c = AttractorController(auto=False)
    c.request_attractor()
    c.wait(60)
    assert c.attractor.trajectory.backend in ("native", "inductor", "eager")
    assert c.status.endswith(backend_text(c.attractor.trajectory)) and "backend" in c.status or "torch" in c.status
    slow = SimpleNamespace(backend="eager", backend_note="native backend: gcc not found")
    assert backend_text(slow) == ", eager torch (slower path: native backend: gcc not found)"
    assert backend_text(SimpleNamespace(backend="native", backend_note="")) == ", native backend"


def test_a_preset_chosen_in_the_page_keeps_the_classroom_settings():
    """The teacher's classroom mode and hidden controls belong to the session: a student
    switching preset must not bring the hidden controls back."""
    c = AttractorController(auto=False)
    c.apply_query({"preset": "henon-fractal", "classroom": "1", "hide": "solver,dt"})
    c.apply_preset("lorenz-butterfly")
    assert c.system == "lorenz63" and c.classroom and c.hidden == ["solver", "dt"]
    plain = AttractorController(auto=False)
    plain.apply_preset("lorenz-butterfly")
    assert not plain.classroom and plain.hidden == []
