"""Compute layers never import UI libraries (checked in a clean subprocess)."""

import subprocess
import sys

import pytest

PURE = ["explorer", "explorer.core.system", "explorer.core.registry", "explorer.core.simulate",
        "explorer.core.solvers", "explorer.core.custom", "explorer.core.analysis",
        "explorer.core.flows", "explorer.core.maps", "explorer.cli", "explorer.core.native",
        "explorer.core.analysis.invariants", "explorer.models", "explorer.models.pwl",
        "explorer.training"]
UI = ("panel", "holoviews", "bokeh", "param", "hvplot", "datashader")


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
