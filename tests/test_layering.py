"""Compute layers never import UI libraries (checked in a clean subprocess)."""

import subprocess
import sys

import pytest

PURE = ["explorer", "explorer.core.system", "explorer.core.registry", "explorer.core.simulate",
        "explorer.core.solvers", "explorer.core.custom", "explorer.core.analysis",
        "explorer.core.flows", "explorer.core.maps", "explorer.cli", "explorer.core.native",
        "explorer.core.analysis.invariants", "explorer.models", "explorer.models.pwl",
        "explorer.training", "explorer.training.frames", "explorer.training.loop",
        "explorer.models.ssm", "explorer.models.selective", "explorer.models.attention",
        "explorer.core.analysis.driven", "explorer.training.sequence", "explorer.core.render",
        "explorer.models.latent", "explorer.training.latent", "explorer.training.images",
        "explorer.core.analysis.parameter_maps", "explorer.sweeps", "explorer.sweeps.engine",
        "explorer.sweeps.store", "explorer.core.geometry"]
UI = ("panel", "holoviews", "bokeh", "param", "hvplot", "datashader")


#: the controllers hold state in ``param`` and never touch a UI library
CONTROLLERS = ["explorer.controllers", "explorer.controllers.base", "explorer.controllers.run",
               "explorer.controllers.jobs", "explorer.controllers.attractors",
               "explorer.controllers.reconstruction", "explorer.controllers.live",
               "explorer.controllers.presets", "explorer.controllers.spectra",
               "explorer.controllers.stochastic", "explorer.controllers.latent",
               "explorer.controllers.parameter_map"]
UI_ONLY = ("panel", "holoviews", "bokeh", "hvplot", "datashader")


def test_controllers_import_no_panel_holoviews_or_bokeh():
    """Every controller module (in one interpreter: torch is imported once)."""
    code = (f"import sys, importlib\n"
            f"for m in {CONTROLLERS!r}: importlib.import_module(m)\n"
            f"print(','.join(m for m in {UI_ONLY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the controllers pulled in {out.stdout.strip()}"


def test_page_registry_loads_no_page():
    """Importing the registry imports no view: a page is built when it is first asked for."""
    code = ("import sys, explorer.pages as p; "
            "print(','.join(m for m in ('holoviews', 'bokeh', 'torch') if m in sys.modules), "
            "sorted(p.REGISTRY))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['attractors',", "'latent',", "'reconstruction',", "'spectra',",
                                  "'stochastic']"], out.stdout


@pytest.mark.parametrize("module", PURE)
def test_pure_layer_imports_no_ui(module):
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            f"import explorer.core.registry as r; r.system_names(dysts=False); "
            f"print(','.join(m for m in {UI!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} pulled in {out.stdout.strip()}"


def test_no_eval_or_exec_in_package():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "explorer"
    bad = [f"{p}:{i}" for p in root.rglob("*.py")
           for i, line in enumerate(p.read_text().splitlines(), 1)
           if re.search(r"(^|[^_.\w])(eval|exec)\(", line) and "noqa: eval-ok" not in line]
    assert not bad, bad


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_attractors_panel_works_after_a_bare_import():
    """The README's notebook line in a fresh interpreter: importing a view loads the plotting
    extensions itself (no ``hv.extension`` call needed first). The script waits for the
    panel's first jobs: an interpreter that exits while a daemon job thread is inside torch
    aborts ("terminate called without an active exception"), a controllers matter."""
    out = _fresh("from explorer.views.attractors import AttractorsPanel; "
                 "p = AttractorsPanel(); p.controller.wait(); "
                 "import holoviews as hv; print(hv.Store.current_backend)")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "bokeh"


def test_reconstruction_panel_works_after_a_bare_import():
    out = _fresh("from explorer.views.reconstruction import ReconstructionPanel; "
                 "p = ReconstructionPanel(); p.controller.wait(); "
                 "import holoviews as hv; print(hv.Store.current_backend)")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "bokeh"


def test_extensions_are_loaded_in_one_place():
    """``hv.extension`` / ``pn.extension`` appear once, in ``views/shell.load_extensions``."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "explorer"
    calls = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\b(hv|holoviews|pn|panel)\.extension\(", line)]
    assert len(calls) == 2 and all(c.startswith("views/shell.py:") for c in calls), calls
