"""The shared view pieces without a browser: the system picker."""

from explorer.controllers.attractors import AttractorController
from explorer.controllers.base import CUSTOM
from explorer.views.source import SystemPicker


def test_system_picker_checks_typed_equations_and_applies_them_in_one_go():
    c = AttractorController(auto=False)
    picker = SystemPicker(c)
    assert picker.w_system.value == "lorenz63" and not picker.custom_box.visible
    picker.w_equations.value = "dx/dt = sigma*(y - x) +* 2"
    assert picker.check() and "'*'" in picker.custom_error.object and picker.b_custom.disabled
    picker.w_equations.value = "dx/dt = -y - z\ndy/dt = x + a*y\ndz/dt = b + z*(x - c)"
    picker.w_custom_params.value = "a = 0.2, b = 0.2, c = 5.7"
    assert picker.check() == [] and not picker.b_custom.disabled
    picker.b_custom.clicks += 1          # equations and parameters change together (one batch)
    assert c.system == CUSTOM and c.custom_params == "a = 0.2, b = 0.2, c = 5.7"
    assert picker.w_system.value == CUSTOM and picker.custom_box.visible
    assert c.current_system().variables == ("x", "y", "z")


def test_system_picker_search_keeps_the_current_system_and_custom():
    c = AttractorController(auto=False)
    picker = SystemPicker(c)
    picker.sync("henon")
    names = {n for group in picker.w_system.groups.values() for n in group.values()}
    assert {"henon", "lorenz63", CUSTOM} <= names and "rossler" not in names
    picker.w_system.value = "henon"
    assert c.system == "henon"
