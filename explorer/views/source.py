"""The system picker every simulating page shares.

:class:`SystemPicker` shows a controller's :class:`~explorer.controllers.base.SystemSource`:
a search box, the systems grouped by origin (built-in, dysts, custom), and the custom-equation
editor, checked as the user types (the first problem with its line and column, and the
"Use these equations" button disabled until the text parses). It writes ``system``,
``equations`` and ``custom_params`` into the controller; the page decides what a change
computes.

:class:`ParamSliders` shows the chosen system's parameters as sliders built from its
:class:`~explorer.core.system.Param` specs (bounds, doc, the equations' Greek letters).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import panel as pn
import param

from ..controllers.base import CUSTOM, SystemSource
from .base import message
from .shell import prompt_widgets


class SystemPicker(pn.viewable.Viewer):
    """Search, grouped system list and custom-equation editor for one :class:`SystemSource`."""

    source = param.ClassSelector(class_=SystemSource)

    def __init__(self, source: SystemSource, *, label: str = "System", toggle_custom: bool = True,
                 **params):
        super().__init__(source=source, **params)
        self.toggle_custom = toggle_custom      # False: the page shows the editor (in a card)
        sw = dict(sizing_mode="stretch_width")
        self._building = False
        self.w_search = pn.widgets.TextInput(name=label, placeholder="search systems ...", **sw)
        self.w_system = pn.widgets.Select(name="", groups=source.system_groups(), value=source.system,
                                          size=1, **sw)
        self.w_equations = pn.widgets.TextAreaInput(name="Equations", value=source.equations,
                                                    height=110, **sw)
        self.w_custom_params = pn.widgets.TextInput(
            name="Parameters", value=source.custom_params,
            placeholder="name = value, ... (e.g. a = 0.2, b = 0.2)", **sw)
        self.w_diffusion = pn.widgets.TextInput(
            name="Diffusion D (diagonal)", value=source.diffusion,
            placeholder="one entry per variable, e.g. 1, 0.5*(1 + x^2)",
            description="Noise sqrt(2 D_i) dW_i on each variable", **sw)
        self.w_diffusion.visible = source.custom_kind == "sde"
        self.custom_error = pn.pane.Markdown("", css_classes=["field-error"], **sw)
        self.b_custom = pn.widgets.Button(name="Use these equations", button_type="primary", **sw)
        self.custom_box = pn.Column(self.w_equations, self.w_diffusion, self.w_custom_params, self.custom_error,
                                    self.b_custom, **sw)
        self.picker = pn.Column(self.w_search, self.w_system, **sw)
        self.w_search.param.watch(lambda e: self.sync(e.new or ""), "value_input")
        self.w_system.param.watch(self._choose, "value")
        self.w_equations.param.watch(self.check, "value_input")
        self.w_custom_params.param.watch(self.check, "value_input")
        self.w_diffusion.param.watch(self.check, "value_input")
        self.b_custom.on_click(self.apply_custom)
        source.param.watch(lambda *_: self.sync(), ["system", "equations", "custom_params", "diffusion"])
        source.param.watch(self._on_errors, "errors")
        self.custom_box.visible = source.system == CUSTOM or not toggle_custom

    def __panel__(self):
        return pn.Column(self.picker, self.custom_box, sizing_mode="stretch_width")

    def _choose(self, event) -> None:
        if self._building or event.new is None or event.new == self.source.system:
            return
        try:
            self.source.system = event.new
        except ValueError as e:
            self.source.status = f"⚠ {str(e).splitlines()[0]}"

    def sync(self, query: str | None = None) -> None:
        """Show the controller's system and equations (and filter the list by ``query``)."""
        s = self.source
        self._building = True
        try:
            groups = s.system_groups(self.w_search.value_input or "" if query is None else query)
            if groups != self.w_system.groups:
                self.w_system.groups = groups
            if self.w_system.value != s.system:
                self.w_system.value = s.system
            if self.w_equations.value != s.equations:
                self.w_equations.value = s.equations
            if self.w_custom_params.value != s.custom_params:
                self.w_custom_params.value = s.custom_params
            if self.w_diffusion.value != s.diffusion:
                self.w_diffusion.value = s.diffusion
        finally:
            self._building = False
        if self.toggle_custom:
            self.custom_box.visible = s.system == CUSTOM

    def _typed(self) -> tuple[str, str, str]:
        return (self.w_equations.value_input or self.w_equations.value,
                self.w_custom_params.value_input or self.w_custom_params.value,
                self.w_diffusion.value_input or self.w_diffusion.value)

    def check(self, _event=None) -> list[str]:
        """Check what is typed (nothing is applied)."""
        problems = self.source.check_custom(*self._typed())
        self.custom_error.object = message(problems[0] if problems else "")
        self.b_custom.disabled = bool(problems)
        return problems

    def apply_custom(self, _event=None) -> None:
        """Use the typed equations (they become the page's system)."""
        s = self.source
        if self.check():
            return
        eqs, ptext, diffusion = self._typed()
        with param.parameterized.batch_call_watchers(s):
            s.param.update(equations=eqs, custom_params=ptext,
                           **({"diffusion": diffusion} if s.custom_kind == "sde" else {}))
        if s.system != CUSTOM:
            s.system = CUSTOM

    def _on_errors(self, *_) -> None:
        err = self.source.errors.get("custom")
        if err:
            self.custom_error.object = message(err)


_GREEK = {name: chr(code) for name, code in (
    ("alpha", 0x3B1), ("beta", 0x3B2), ("gamma", 0x3B3), ("delta", 0x3B4), ("epsilon", 0x3B5),
    ("zeta", 0x3B6), ("eta", 0x3B7), ("theta", 0x3B8), ("kappa", 0x3BA), ("lambda", 0x3BB),
    ("lam", 0x3BB), ("mu", 0x3BC), ("nu", 0x3BD), ("xi", 0x3BE), ("pi", 0x3C0), ("rho", 0x3C1),
    ("sigma", 0x3C3), ("tau", 0x3C4), ("phi", 0x3C6), ("chi", 0x3C7), ("psi", 0x3C8),
    ("omega", 0x3C9), ("Omega", 0x3A9), ("Gamma", 0x393), ("Delta", 0x394))}


def param_label(name: str) -> str:
    """A parameter's label as the equations write it: ``sigma`` -> ``σ``, ``beta1`` -> ``β1``."""
    head = name.rstrip("0123456789_")
    return _GREEK[head] + name[len(head):].lstrip("_") if head in _GREEK else name


def nice_step(low: float, high: float) -> float:
    """A slider step of about a thousandth of the range, a power of ten."""
    span = float(high) - float(low)
    if not math.isfinite(span) or span <= 0:
        return 0.01
    return 10 ** math.floor(math.log10(span / 1000))


class ParamSliders(pn.viewable.Viewer):
    """One slider per parameter of a system (integer parameters: an integer slider, shown
    first; others an editable float slider whose text box takes typed values).
    ``on_change(name, value)`` gets the user's changes; :meth:`show` moves the sliders.

    The sliders are a pool that only grows: a new system relabels and rescales the ones it
    needs and hides the rest. Building new slider models on every switch of system or preset
    cost about 0.12 s of the server and as much of the browser."""

    def __init__(self, on_change: Callable[[str, float], None], **params):
        super().__init__(**params)
        self.on_change = on_change
        self.box = pn.Column(sizing_mode="stretch_width")
        self._ints: list = []
        self._floats: list = []
        self._key = None
        self._building = False

    def __panel__(self):
        return self.box

    def note(self, text: str) -> None:
        """No sliders, a line of text instead (custom systems)."""
        self._key = None
        self._ints, self._floats = [], []
        self.box.objects = [pn.pane.Markdown(text)]

    def show(self, specs, values) -> None:
        key = tuple((p.name, p.low, p.high, p.integer) for p in specs)
        ints = [p for p in specs if p.integer]
        floats = [p for p in specs if not p.integer]
        self._building = True
        try:
            grown = False
            for pool, wanted, make in ((self._ints, ints, self._int_slider),
                                       (self._floats, floats, self._float_slider)):
                while len(pool) < len(wanted):
                    pool.append(make())
                    grown = True
            if grown or not self.box.objects or not isinstance(self.box.objects[0], pn.widgets.Widget):
                self.box.objects = [*self._ints, *self._floats]
                prompt_widgets(self.box)
            for pool, wanted in ((self._ints, ints), (self._floats, floats)):
                for k, s in enumerate(pool):
                    if k < len(wanted):
                        self._fit(s, wanted[k], values.get(wanted[k].name, wanted[k].default),
                                  new=key != self._key)
                    elif s.visible:
                        s.visible = False
            self._key = key
        finally:
            self._building = False

    def _fit(self, s, spec, value, *, new: bool) -> None:
        """Point slider ``s`` at parameter ``spec`` (label, range, tooltip) and ``value``."""
        s._explorer_param = spec.name
        if spec.integer:
            changes = dict(name=param_label(spec.name), start=int(spec.low),
                           end=int(min(spec.high, 200)), value=int(value))
        else:
            changes = dict(name=param_label(spec.name), start=float(spec.low), end=float(spec.high),
                           fixed_start=float(spec.low), fixed_end=float(spec.high),
                           step=nice_step(spec.low, spec.high), value=float(value))
        value = changes.pop("value")
        if not new:
            changes = {}
        if "description" in s.param:
            changes["description"] = spec.doc or None
        changes["visible"] = True
        # the range is widened to hold both the old and the new value, then the value is
        # moved, then the range narrowed: a value outside its range at any moment would be
        # clamped (here by validation, in the browser by the slider, which sends it back)
        bounds = {k: v for k, v in changes.items() if k in ("start", "end", "fixed_start", "fixed_end")}
        wide = {k: (min if k.endswith("start") else max)(getattr(s, k), v) for k, v in bounds.items()
                if getattr(s, k) is not None}
        s.param.update(**{k: v for k, v in wide.items() if getattr(s, k) != v})
        if s.value != value:
            s.value = value
        s.param.update(**{k: v for k, v in changes.items() if getattr(s, k) != v})

    def _int_slider(self):
        s = pn.widgets.IntSlider(name="", start=0, end=1, value=0, sizing_mode="stretch_width")
        s.param.watch(lambda e: self._changed(s._explorer_param, e.new), "value_throttled")
        return s

    def _float_slider(self):
        s = pn.widgets.EditableFloatSlider(name="", start=0.0, end=1.0, fixed_start=0.0, fixed_end=1.0,
                                           value=0.0, format="0.[0000]", sizing_mode="stretch_width")
        s.param.watch(lambda e: self._changed(s._explorer_param, e.new), "value")
        return s

    def _changed(self, name: str, value) -> None:
        if not self._building and value is not None:
            self.on_change(name, value)
