"""State and actions of the Spectra page (param only: no Panel, no HoloViews, no Bokeh).

How the eigenvalues of sequence models set their memory, and how they move while a model
trains. The page's science on the shared platform:

* **models** (:mod:`explorer.models.ssm`, :mod:`~explorer.models.selective`,
  :mod:`~explorer.models.attention`): a linear state-space layer with the HiPPO, S4D, LRU,
  random and zero-real-part initialisations and three discretisations; a selective
  (Mamba-style) block; a small transformer;
* **tasks** (:mod:`explorer.training.sequence`): synthetic memory-function targets
  ``y_t = Σ_s ρ(s) x_{t−s}`` (exponential, power-law, delayed impulse, oscillatory) and
  D-retrieval for attention;
* **preview** (a job): a fresh model of the current settings, so a change of initialisation
  or discretisation moves the eigenvalues at once;
* **training** (the run, :class:`~.run.RunController`): a live frame is the model's
  spectrum (continuous and discrete eigenvalues), kernel, frequency response and learned
  memory, and for attention its maps and circuits;
* **stability** (a job): the largest Lyapunov exponent of the recurrence against the
  transformer's sensitivity to the same input perturbation;
* **tokens** (a job): token trajectories of the selective SSM's continuous-depth limit and
  the converge/diverge phase diagram with the current model marked;
* **heads sweep** (a job): loss against the number of heads at a fixed parameter budget.

Compute functions at the end (:func:`build_model`, :func:`model_frame`, ...) are pure and
run in worker threads; numbers for the plots are numpy float64 (complex128 eigenvalues).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import param
import torch

from ..core.errors import ExplorerError, ParameterError
from .base import PresetLinks, one_line
from .jobs import Done
from .run import RunController

FAMILIES = ("ssm", "selective", "transformer")
FAMILY_TITLES = {"ssm": "Linear SSM (S4D / HiPPO / LRU)", "selective": "Selective SSM (Mamba)",
                 "transformer": "Transformer (attention)"}
INIT_TITLES = {"s4d-lin": "S4D-Lin", "s4d-inv": "S4D-Inv", "s4d-real": "S4D-Real",
               "legs": "HiPPO-LegS (full matrix)", "legs-diag": "HiPPO-LegS (normal part, diagonal)",
               "legt": "HiPPO-LegT (full matrix)", "lru": "LRU ring", "random": "Random Gaussian",
               "zero-real": "Zero real part (timescale from autocorrelation)"}
MEMORY_TITLES = {"exp": "Exponential decay", "power": "Power-law decay",
                 "delay": "Delayed impulse (recall at lag k)", "oscillatory": "Oscillatory decay"}
TASKS = ("memory", "retrieval")
#: eigenvalue frames kept for the trails
TRAIL_FRAMES = 40
#: kernel channels drawn
KERNEL_CHANNELS = 8
#: attention maps are drawn for this many positions at most
MAP_POSITIONS = 64


# ============================================================================ presets
@dataclass(frozen=True)
class Preset:
    """A teaching preset: settings and a few sentences (``?page=spectra&preset=KEY``)."""

    key: str
    title: str
    text: str
    settings: dict


PRESETS: dict[str, Preset] = {p.key: p for p in (
    Preset("s4d-lin", "S4D-Lin learns an exponential memory",
           "Eigenvalues −½ + iπn on a vertical line in the left half-plane; after zero-order hold "
           "they sit on a circle of radius exp(−Δ/2) inside the unit circle. Train on an "
           "exponential memory: the modes that matter move to the target's decay rate, and the "
           "learned memory function follows ρ(s) = exp(−s/τ).",
           dict(family="ssm", init="s4d-lin", task="memory", memory="exp", strength=20.0,
                discretization="zoh")),
    Preset("hippo", "HiPPO-LegS: eigenvalues −1, …, −N",
           "The LegS matrix is lower triangular: its eigenvalues are exactly −1, −2, …, −N on the "
           "real axis. Its normal part (S4D-LegS) has real parts −½ and spreads the imaginary parts "
           "over three decades; S4D-Inv is its closed-form approximation. Switch between them.",
           dict(family="ssm", init="legs", state_size=16, task="memory", memory="delay",
                strength=30.0)),
    Preset("curse-of-memory", "Curse of memory: a power-law target",
           "A power-law memory decays slower than any exponential; a linear recurrence "
           "approximates it by a sum of exponentials and needs ever more modes (and longer "
           "training) as the memory grows. Raise the memory length and watch the error of the "
           "learned memory in its tail.",
           dict(family="ssm", init="s4d-real", task="memory", memory="power", strength=40.0)),
    Preset("zero-real", "Zero real part, timescale from the input's autocorrelation",
           "All eigenvalues start on the imaginary axis (on the unit circle after discretisation): "
           "no built-in forgetting. The step Δ = 1/√(L·λ_max(R)) is set from the sequence length "
           "and the largest eigenvalue of the input autocorrelation matrix, so the output stays "
           "bounded. Training moves the real parts to the left as the task requires.",
           dict(family="ssm", init="zero-real", task="memory", memory="oscillatory", strength=30.0,
                input_kind="ar1")),
    Preset("euler-unstable", "Euler discretisation of S4D-Inv: unstable",
           "Forward Euler maps λ to 1 + Δλ, which lies inside the unit circle only when λ is in the "
           "disk of centre −1/Δ and radius 1/Δ. S4D-Inv's large imaginary parts fall outside: "
           "discrete eigenvalues leave the unit circle and the recurrence blows up. Compare "
           "zero-order hold and bilinear.",
           dict(family="ssm", init="s4d-inv", discretization="euler", dt_min=0.05, dt_max=0.1)),
    Preset("attention-heads", "Attention: number of heads at a fixed budget",
           "D-retrieval asks for D tokens, each the maximiser of its own feature. With h ≥ D heads "
           "each head can retrieve one; with fewer heads the model needs far more parameters. "
           "Train, look at the attention maps per head, then run the sweep of loss against the "
           "number of heads with h·d_head fixed.",
           dict(family="transformer", task="retrieval", n_heads=4, d_head=4, D=4, seq_len=16,
                lr=1e-2, steps=1000, train_batch=64, sweep_steps=600)),
    Preset("selective", "Selective SSM: tokens converge or diverge",
           "In Mamba the step Δ, B and C depend on the token. In the continuous-depth limit all "
           "tokens either converge to zero or diverge, depending on the sign of μ = S_Cᵀ S_B and "
           "on Δ. The phase diagram shows the regimes; the marker is the current model.",
           dict(family="selective", task="memory", memory="exp", strength=10.0)),
)}

#: URL query keys and the settings they hold
QUERY_KEYS = {"family": "family", "init": "init", "N": "state_size", "H": "channels",
              "disc": "discretization", "task": "task", "memory": "memory", "strength": "strength",
              "L": "seq_len", "heads": "n_heads", "dhead": "d_head", "seed": "seed",
              "steps": "steps", "lr": "lr", "batch": "train_batch"}


# ============================================================================ results
@dataclass
class SpectrumFrame:
    """A picture of one model (numpy; complex128 eigenvalues).

    Attributes:
        step: optimisation steps behind it (0: a fresh model); ``family``: its kind.
        cont, disc: continuous and discrete eigenvalues (K,) (flattened over layers,
            channels/heads and modes); ``group``: (K,) the channel or head of each.
        cont_title, disc_title: what the two planes show for this family.
        dt: step sizes Δ (one per channel), or None.
        kernels: (C, L) convolution kernels of the first channels (or None).
        lags: (L,) lags of ``memory`` and ``target``; ``memory``: the learned memory function;
            ``target``: the task's ρ(s) (None for retrieval).
        freqs, response, target_response: |frequency response| of the memory and the target.
        lyapunov: largest Lyapunov exponent of the recurrence per step (None: no recurrence).
        attention: (heads, T, T) maps of the first layer for the probe input (transformer);
            ``circuits``: {"qk", "ov"} complex eigenvalues (heads, d_model).
        warning: one sentence when the discretisation is unstable (|λ̄| > 1) or similar.
    """

    step: int
    family: str
    cont: np.ndarray
    disc: np.ndarray
    group: np.ndarray
    cont_title: str
    disc_title: str
    dt: np.ndarray | None
    kernels: np.ndarray | None
    lags: np.ndarray
    memory: np.ndarray | None
    target: np.ndarray | None
    freqs: np.ndarray
    response: np.ndarray | None
    target_response: np.ndarray | None
    lyapunov: float | None
    attention: np.ndarray | None = None
    circuits: dict | None = None
    tokens: dict | None = None
    warning: str = ""
    seconds: float = 0.0


@dataclass
class Stability:
    """Sensitivity of outputs to a perturbation of the first input token, per lag."""

    lags: np.ndarray
    curves: dict            # label -> (T,) |Δy_t| / ε
    lyapunov: dict          # label -> exponent per step (recurrences)


@dataclass
class TokenPicture:
    """Token trajectories of the selective SSM's continuous-depth limit and the phase diagram."""

    t: np.ndarray               # (K,)
    x: np.ndarray               # (K, L) token values (NaN after blow-up)
    regime: str                 # of the current model
    mu_axis: np.ndarray         # (n,)
    sdx_axis: np.ndarray        # (m,)
    regimes: np.ndarray         # (m, n) codes
    labels: list
    marker: tuple[float, float]  # (mu, s_delta * x0) of the current model
    params: dict


class SpectraController(PresetLinks, RunController):
    """Everything the Spectra page shows, and the actions that preview, train and sweep."""

    run_name = "spectra"
    query_keys = QUERY_KEYS
    #: a spectrum frame costs ~10 ms at N = 256 (the run keeps frames under a quarter of its time)
    frame_seconds = 0.1

    family = param.Selector(default="ssm", objects=list(FAMILIES), doc="Kind of sequence model.")
    # ---- linear SSM
    init = param.Selector(default="s4d-lin", objects=list(INIT_TITLES),
                          doc="Initialisation of the state matrix A.")
    state_size = param.Integer(default=64, bounds=(2, 1024), doc="State size N per channel.")
    channels = param.Integer(default=4, bounds=(1, 64), doc="Independent SSM channels H.")
    discretization = param.Selector(default="zoh", objects=["zoh", "bilinear", "euler"],
                                    doc="Continuous to discrete: zero-order hold, bilinear or forward Euler.")
    dt_min = param.Number(default=1e-3, bounds=(1e-5, 10.0), doc="Smallest step Δ (log-uniform per channel).")
    dt_max = param.Number(default=1e-1, bounds=(1e-5, 10.0), doc="Largest step Δ.")
    layers = param.Integer(default=1, bounds=(1, 4), doc="Stacked layers.")
    # ---- selective
    d_state = param.Integer(default=16, bounds=(1, 256), doc="State size N of the selective block.")
    d_model = param.Integer(default=8, bounds=(1, 256), doc="Width of the selective model.")
    # ---- transformer
    n_heads = param.Integer(default=2, bounds=(1, 8), doc="Attention heads per layer.")
    d_head = param.Integer(default=8, bounds=(1, 128), doc="Dimension of each head.")
    causal = param.Boolean(default=True, doc="Causal attention (a position sees only the past).")
    # ---- task
    task = param.Selector(default="memory", objects=list(TASKS),
                          doc="Memory-function regression or D-retrieval.")
    memory = param.Selector(default="exp", objects=list(MEMORY_TITLES), doc="Memory function ρ of the target.")
    strength = param.Number(default=20.0, bounds=(1.0, 2000.0), doc="Memory length (steps): τ, or the lag k.")
    seq_len = param.Integer(default=256, bounds=(4, 16_384), doc="Sequence length L.")
    input_kind = param.Selector(default="white", objects=["white", "ar1"],
                                doc="Input: white noise or an AR(1) process (autocorrelated).")
    phi = param.Number(default=0.8, bounds=(-0.99, 0.99), doc="AR(1) coefficient of the input.")
    readout = param.Selector(default="linear", objects=["linear", "tanh"],
                             doc="Target readout: linear, or tanh of the linear functional.")
    D = param.Integer(default=4, bounds=(1, 16), doc="Retrieval: tokens to retrieve.")
    # ---- training
    lr = param.Number(default=3e-3, bounds=(1e-6, 1.0), doc="Learning rate (Adam, cosine decay).")
    train_batch = param.Integer(default=32, bounds=(1, 4096), doc="Sequences per step.")
    seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc="Seed of the model and the data.")
    # ---- sweep
    budget = param.Integer(default=16, bounds=(1, 256), doc="Heads sweep: n_heads × d_head kept fixed.")
    sweep_steps = param.Integer(default=300, bounds=(10, 100_000), doc="Heads sweep: steps per model.")
    # ---- results
    preset = param.String(default="", doc="The teaching preset last applied ('' for none).")
    frame = param.Parameter(default=None, doc="The shown model's spectrum (SpectrumFrame).")
    stability = param.Parameter(default=None, doc="Sensitivity comparison (Stability).")
    tokens = param.Parameter(default=None, doc="Token dynamics (TokenPicture).")
    sweep = param.Parameter(default=None, doc="Heads sweep (explorer.training.sequence.HeadSweep).")

    SETTINGS = ("family", "init", "state_size", "channels", "discretization", "dt_min", "dt_max",
                "layers", "d_state", "d_model", "n_heads", "d_head", "causal", "task", "memory",
                "strength", "seq_len", "input_kind", "phi", "readout", "D", "seed")

    def __init__(self, **params):
        params.setdefault("steps", 600)
        super().__init__(**params)
        self._trained: dict[str, torch.nn.Module] = {}      # family -> last trained model (CPU copy)
        self._stability_quiet = False
        self.param.watch(self._on_settings, list(self.SETTINGS))

    # ================================================================ settings
    def model_config(self, family: str | None = None) -> dict[str, Any]:
        """The model's config (plain data) from the settings."""
        family = family or self.family
        d_in = max(2, int(self.D)) if self.task == "retrieval" else 1   # retrieval tokens are vectors
        d_out = 1
        if family == "ssm":
            return dict(d_input=d_in, d_output=d_out, channels=int(self.channels),
                        state_size=int(self.state_size), layers=int(self.layers), init=self.init,
                        discretization=self.discretization, dt_min=float(self.dt_min),
                        dt_max=float(self.dt_max), seq_len=int(self.seq_len), seed=int(self.seed),
                        input_lambda_max=self.input_lambda_max())
        if family == "selective":
            return dict(d_input=d_in, d_output=d_out, d_model=int(self.d_model),
                        d_state=int(self.d_state), layers=int(self.layers),
                        dt_min=float(self.dt_min), dt_max=float(self.dt_max), seed=int(self.seed))
        retrieval = self.task == "retrieval"
        # retrieval: an MLP after the attention computes the outer function of the retrieved
        # tokens, and the task is permutation-invariant (no positions), as in head_sweep
        return dict(d_input=d_in, d_output=d_out, n_heads=int(self.n_heads), d_head=int(self.d_head),
                    layers=int(self.layers), causal=bool(self.causal), seed=int(self.seed),
                    max_len=max(4096, int(self.seq_len)), readout="last" if retrieval else "all",
                    d_ff=4 * int(self.n_heads) * int(self.d_head) if retrieval else 0,
                    positional="none" if retrieval else "sinusoidal")

    def input_lambda_max(self) -> float:
        """λ_max of the input's autocorrelation matrix (the zero-real timescale): 1 for white
        noise; for AR(1) the maximum of its spectral density, (1 + φ)/(1 − φ), the limit of
        λ_max of the L×L Toeplitz matrix r(k) = φ^|k| as L grows (an upper bound for finite L)."""
        if self.task != "memory" or self.input_kind == "white":
            return 1.0
        phi = float(self.phi)
        return max((1 + phi) / (1 - phi), 1e-6)

    def task_settings(self) -> dict[str, Any]:
        """What the frame needs to know about the task."""
        return dict(task=self.task, memory=self.memory, strength=float(self.strength),
                    seq_len=int(self.seq_len), D=int(self.D), input_kind=self.input_kind,
                    phi=float(self.phi), readout=self.readout, seed=int(self.seed))

    def check(self) -> None:
        """Validate the settings together (UI thread); :class:`ParameterError` with one line."""
        if self.dt_min > self.dt_max:
            raise ParameterError(f"Δ min {self.dt_min:g} is above Δ max {self.dt_max:g}")
        if self.family == "ssm" and self.init not in ("s4d-real",) and self.state_size % 2:
            raise ParameterError(f"{INIT_TITLES[self.init]} pairs conjugate eigenvalues: use an "
                                 f"even state size (not {self.state_size})")
        if self.family == "ssm" and self.init in ("legs", "legt", "random") and self.state_size > 256:
            raise ParameterError(f"{INIT_TITLES[self.init]} is a full N×N matrix: at most 256 "
                                 f"states here (not {self.state_size})")
        if self.task == "retrieval" and self.D > self.seq_len:
            raise ParameterError(f"D = {self.D} tokens to retrieve from {self.seq_len} positions")
        if self.task == "memory" and self.memory == "delay" and self.strength >= self.seq_len:
            raise ParameterError(f"the lag {self.strength:g} must be below the sequence length {self.seq_len}")
        work = self.train_batch * self.seq_len * (self.state_size if self.family == "ssm" else self.d_model)
        if work > 2e8:
            raise ParameterError(f"batch × length × state = {work:,.0f} per step is too large for "
                                 "a live page (limit 2e8): lower one of them")

    def apply_preset(self, key: str) -> None:
        p = PRESETS.get(key)
        if p is None:
            raise ParameterError(f"unknown preset {key!r}; presets: {', '.join(PRESETS)}")
        if self.running:
            raise ExplorerError("a run is training: stop it before loading a preset")
        with self.suspended():
            for name in (*self.SETTINGS, "lr", "train_batch", "sweep_steps"):
                if name not in ("seed",):
                    setattr(self, name, self.param[name].default)
            self.steps = 600
            self.param.update(**p.settings)
            self.preset = key
        self.status = f"preset: {p.title}"
        self._changed()

    def _on_settings(self, *events) -> None:
        if self._suspend or self._closed:
            return
        self.preset = ""
        self._changed()

    def _changed(self) -> None:
        if self.running:
            self.stop()
            self.status = "training stopped: the settings changed (Start trains a new model)"
        if self.auto:
            self.request_preview()

    # ================================================================ jobs
    def request_preview(self) -> None:
        """A fresh model of the settings and its spectrum (job)."""
        if self._closed:
            return
        try:
            self.check()
        except ExplorerError as e:
            self._error("preview", one_line(e))
            return
        family, cfg, ts = self.family, self.model_config(), self.task_settings()

        def work(stop, progress):
            model = build_model(family, cfg)
            return model_frame(model, family, ts, step=0)

        self._submit("preview", work, f"building {FAMILY_TITLES[family]}", quiet=True)
        if self.family == "selective":
            self.request_tokens()

    def request_stability(self, *, quiet: bool = False) -> None:
        """Lyapunov exponent of the recurrence against the transformer's sensitivity (job;
        ``quiet``: a follow-up of a preview or a run, the status line stays)."""
        if self._closed:
            return
        try:
            self.check()
        except ExplorerError as e:
            self._error("stability", one_line(e))
            return
        models = self._models_for_stability()
        ts = self.task_settings()
        L = min(int(self.seq_len), 512)
        self._stability_quiet = quiet
        self._submit("stability", lambda stop, progress: compare_stability(models, ts, L),
                     "comparing sensitivity to an input perturbation", quiet=quiet)

    def _models_for_stability(self) -> dict[str, tuple[str, dict | torch.nn.Module]]:
        """``{label: (family, model or config)}``: the shown model and a transformer (the last
        trained one of this session, else a fresh one of the same width)."""
        out: dict[str, tuple[str, Any]] = {}
        for fam in FAMILIES:
            if fam in self._trained:
                out[f"{fam} (trained)"] = (fam, self._trained[fam])
        if self.family not in self._trained:
            out[f"{self.family} (initialisation)"] = (self.family, self.model_config())
        if "transformer" not in self._trained and self.family != "transformer":
            out["transformer (initialisation)"] = ("transformer", self.model_config("transformer"))
        return out

    def request_tokens(self) -> None:
        """Token dynamics of the selective model (job)."""
        model = self._trained.get("selective")
        src = model if model is not None else self.model_config("selective")
        self._submit("tokens", lambda stop, progress: token_picture(src), "token dynamics", quiet=True)

    def request_sweep(self) -> None:
        """Loss against the number of heads at a fixed budget (job)."""
        from ..training.sequence import head_sweep

        heads = tuple(h for h in (1, 2, 4, 8) if self.budget % h == 0)
        if not heads:
            self._error("sweep", f"budget {self.budget} is not divisible by 1, 2, 4 or 8")
            return
        args = dict(budget=int(self.budget), heads=heads, D=int(self.D),
                    T=int(min(self.seq_len, 64)), steps=int(self.sweep_steps), seed=int(self.seed))
        self._submit("sweep", lambda stop, progress: head_sweep(stop=stop, progress=progress, **args),
                     f"training {len(heads)} transformers (heads {', '.join(map(str, heads))}, "
                     f"h·d_head = {self.budget})")

    def _job_done(self, d: Done) -> None:
        if d.error is not None:
            self._error(d.key, d.error)
            return
        if d.key == "preview":
            if not self.running and (self.frame is None or self.frame.step == 0
                                     or self._trainer is None):
                self.frame = d.value
                self.status = self._frame_status(d.value)
                self.request_stability(quiet=True)
            return
        if d.key == "stability":
            self.stability = d.value
            if not self._stability_quiet:
                parts = [f"{k}: λ_max {v:+.4f}/step" for k, v in d.value.lyapunov.items()]
                self.status = "sensitivity compared" + (" · " + " · ".join(parts) if parts else "")
            return
        if d.key == "tokens":
            self.tokens = d.value
            return
        if d.key == "sweep":
            self.sweep = d.value
            best = int(d.value.heads[int(np.argmin(d.value.losses))])
            self.status = f"heads sweep done in {d.seconds:.1f} s: lowest loss with {best} heads"
            return
        super()._job_done(d)

    def _frame_status(self, f: SpectrumFrame) -> str:
        parts = [f"{FAMILY_TITLES[f.family]}: {f.cont.size} eigenvalues"]
        if f.lyapunov is not None:
            parts.append(f"largest Lyapunov exponent {f.lyapunov:+.4g} per step")
        if f.warning:
            parts.append("⚠ " + f.warning)
        return " · ".join(parts)

    # ================================================================ training (run hooks)
    def new_run(self):
        self.check()
        from ..training.sequence import make_sequence_run
        args = dict(model=self.family, task=self.task, model_config=self.model_config(),
                    memory=self.memory, strength=float(self.strength), seq_len=int(self.seq_len),
                    batch=int(self.train_batch), input_kind=self.input_kind, phi=float(self.phi),
                    readout=self.readout, D=int(self.D), lr=float(self.lr),
                    planned_steps=int(self.steps), seed=int(self.seed))
        return lambda run: make_sequence_run(**args)

    def frame_of(self, trainer, last: bool = False) -> SpectrumFrame:
        return model_frame(trainer.task.model, self.family, self.task_settings(),
                           step=trainer.step_count, light=not last)

    def on_frame(self, frame) -> None:
        self.frame = frame

    def on_run_end(self, phase: str) -> None:
        tr = self._trainer
        if tr is not None:
            import copy
            self._trained[self.family] = copy.deepcopy(tr.task.model).cpu().eval()
            if self.family == "selective":
                self.request_tokens()
            self.request_stability(quiet=True)

    def progress_extra(self) -> list[str]:
        f = self.frame
        out = []
        m = self._last_metrics or {}
        if "decay_rate" in m and math.isfinite(m["decay_rate"]):
            out.append(f"decay rate {m['decay_rate']:.3g} (target {1 / self.strength:.3g})")
        if f is not None and f.lyapunov is not None:
            out.append(f"λ_max {f.lyapunov:+.3g}")
        return out

    def final_text(self) -> str:
        m = self._last_metrics or {}
        parts = []
        if "nmse" in m:
            parts.append(f"test NMSE {m['nmse']:.3g}")
        if "decay_rate" in m and math.isfinite(m["decay_rate"]):
            parts.append(f"learned decay rate {m['decay_rate']:.4g} (target {1 / self.strength:.4g})")
        return ", ".join(parts)

    def load_trainer(self, path: Path):
        from ..training.sequence import load_sequence_run
        return load_sequence_run(path)

    def on_loaded(self, trainer, name: str) -> None:
        """Settings follow the loaded run's model and task."""
        from ..training.sequence import settings_of
        with self.suspended():
            for k, v in settings_of(trainer).items():
                if k in self.param and k in self.SETTINGS:
                    try:
                        setattr(self, k, v)
                    except (ValueError, TypeError):
                        pass
            self.preset = ""
        self.frame = model_frame(trainer.task.model, self.family, self.task_settings(),
                                 step=trainer.step_count)


# ============================================================================ compute (workers)
def build_model(family: str, config: dict) -> torch.nn.Module:
    """A fresh model of ``family`` from its config (float32)."""
    if family == "ssm":
        from ..models.ssm import build_ssm
        return build_ssm(config)
    if family == "selective":
        from ..models.selective import build_selective
        return build_selective(config)
    if family == "transformer":
        from ..models.attention import build_transformer
        return build_transformer(config)
    raise ParameterError(f"unknown model family {family!r}; families: {', '.join(FAMILIES)}")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy()


def probe_input(ts: dict, L: int, d_input: int = 1) -> torch.Tensor:
    """The fixed input the page probes a model with: (L, 1, d_input) float32 (seeded)."""
    g = torch.Generator().manual_seed(int(ts.get("seed", 0)) + 12345)
    return torch.randn(L, 1, d_input, generator=g)


def target_memory(ts: dict, L: int) -> torch.Tensor:
    """The memory function a model fitting the task's target learns, ``c_in c_out ρ(s)``
    (the target is scaled to unit variance), (L,) float64."""
    from ..training.sequence import memory_function, target_scales

    rho = memory_function(ts["memory"], int(ts["seq_len"]), ts["strength"])
    c_in, c_out = target_scales(rho, readout=ts.get("readout", "linear"),
                                input_kind=ts["input_kind"], phi=ts["phi"])
    return rho[:L] * (c_in * c_out)


def model_frame(model: torch.nn.Module, family: str, ts: dict, *, step: int,
                light: bool = False) -> SpectrumFrame:
    """The spectrum, kernel, memory and (attention) maps of ``model`` (worker thread; the
    model is at rest between two training steps and evaluated without gradients in its own
    dtype). ``light``: a live frame (no attention circuits)."""
    from ..training.sequence import learned_memory

    t0 = time.perf_counter()
    L = int(ts["seq_len"])
    Lmem = int(min(L, 2048))
    memory_target = ts["task"] == "memory"
    warning = ""
    with torch.no_grad():
        was = model.training
        model.eval()
        try:
            attention = circuits = None
            dt = kernels = None
            lyap = None
            if family == "ssm":
                cont = model.eigenvalues()                          # (layers, H, M)
                disc = model.discrete_eigenvalues()
                groups = torch.arange(cont.shape[1]).view(1, -1, 1).expand(cont.shape)
                dt = _np(model.dt().reshape(-1).double())
                kernels = _np(model.kernels(Lmem)[0, :KERNEL_CHANNELS].double())
                lyap = float(model.lyapunov_exponent())
                memory = _np(learned_memory(model, Lmem))
                cont_title = "Continuous eigenvalues λ of A (left half-plane: stable)"
                disc_title = "Discrete eigenvalues λ̄ (inside the unit circle: stable)"
            elif family == "selective":
                x = probe_input(ts, min(L, 512), model.config.d_input)
                cont = model.eigenvalues().to(torch.complex128)     # (layers, d_inner, N) real
                abar = model.transition_eigenvalues(x)              # (layers, T, B, d_inner, N)
                disc = abar.mean(dim=(1, 2)).to(torch.complex128)
                groups = torch.arange(cont.shape[1]).view(1, -1, 1).expand(cont.shape)
                lyap = float(model.lyapunov_exponents(x).max())
                memory = _np(learned_memory(model, Lmem))
                cont_title = "Continuous eigenvalues A = −exp(A_log) (real, negative)"
                disc_title = "Per-token transitions Ā_t = exp(Δ_t A), mean over the probe's tokens"
            else:
                from ..models.attention import attention_eigenvalues
                T = int(min(L, MAP_POSITIONS))
                x = probe_input(ts, T, model.config.d_input)
                maps = model.attention_maps(x)                      # (layers, B, heads, T, T)
                attention = _np(maps[0, 0].double())
                ev = attention_eigenvalues(maps[:, 0].double())     # (layers, heads, T)
                c = model.circuits()
                circuits = {"qk": _np(c["qk"]), "ov": _np(c["ov"])}
                cont = c["ov"].to(torch.complex128)                 # (layers, heads, d_model)
                disc = ev.to(torch.complex128)
                groups = torch.arange(disc.shape[1]).view(1, -1, 1).expand(disc.shape)
                cgroups = torch.arange(cont.shape[1]).view(1, -1, 1).expand(cont.shape)
                memory = _np(learned_memory(model, Lmem))
                cont_title = "OV-circuit eigenvalues of each head (W_O W_V)"
                disc_title = "Eigenvalues of each attention matrix (row-stochastic: |λ| ≤ 1, leading 1)"
        finally:
            model.train(was)
    cont_np = _np(cont).reshape(-1)
    disc_np = _np(disc).reshape(-1)
    group = _np(groups).reshape(-1)
    if family == "transformer":
        group_cont = _np(cgroups).reshape(-1)
        group = np.concatenate([group_cont, group])       # both planes' colours, split by size
    target = response = target_response = None
    if memory_target:
        target = _np(target_memory(ts, Lmem))
    lags = np.arange(Lmem, dtype=float)
    nf = Lmem // 2 + 1
    freqs = np.fft.rfftfreq(Lmem)
    if memory is not None and np.isfinite(memory).all():
        response = np.abs(np.fft.rfft(memory))
    if target is not None:
        target_response = np.abs(np.fft.rfft(target))
    _ = nf
    if family in ("ssm", "selective"):
        rmax = float(np.abs(disc_np).max()) if disc_np.size else 0.0
        if rmax > 1 + 1e-9:
            warning = (f"unstable discretisation: |λ̄| reaches {rmax:.3g} > 1 (the recurrence "
                       "grows); use zero-order hold or bilinear, or a smaller Δ")
    return SpectrumFrame(step=int(step), family=family, cont=cont_np, disc=disc_np, group=group,
                         cont_title=cont_title, disc_title=disc_title, dt=dt, kernels=kernels,
                         lags=lags, memory=memory, target=target, freqs=freqs, response=response,
                         target_response=target_response, lyapunov=lyap, attention=attention,
                         circuits=None if light else circuits, warning=warning,
                         seconds=time.perf_counter() - t0)


def compare_stability(models: dict, ts: dict, L: int) -> Stability:
    """Sensitivity ``|Δy_t| / ε`` of each model's outputs to a perturbation of the first
    input, and the largest Lyapunov exponent of each recurrence (float64 copies)."""
    import copy

    from ..core.analysis.driven import perturbation_response

    curves, lyap = {}, {}
    for label, (family, src) in models.items():
        m = build_model(family, src) if isinstance(src, dict) else copy.deepcopy(src)
        m = m.double().eval()
        x = probe_input(ts, L, m.config.d_input).double()
        with torch.no_grad():
            r = perturbation_response(m, x, position=0)
        curves[label] = _np(r.double())
        if family == "ssm":
            lyap[label] = float(m.lyapunov_exponent())
        elif family == "selective":
            with torch.no_grad():
                lyap[label] = float(m.lyapunov_exponents(x).max())
    return Stability(lags=np.arange(L, dtype=float), curves=curves, lyapunov=lyap)


def token_picture(src, *, tokens: int = 8, t_max: float | None = None) -> TokenPicture:
    """Token trajectories of the continuous-depth limit for the selective model's parameters
    and the phase diagram of regimes over μ and S_Δ·x₀. ``t_max`` defaults to three times the
    dynamics' own time scale ``1/(2|μ| softplus(b) x₀²)`` (the blow-up time at S_Δ = 0)."""
    from ..models.selective import phase_diagram, token_ode, token_regime

    model = build_model("selective", src) if isinstance(src, dict) else src
    p = model.token_parameters()
    mu, sd, b = float(p["mu"]), float(p["s_delta"]), float(p["b"])
    if t_max is None:
        rate = 2 * abs(mu) * math.log1p(math.exp(b))
        t_max = float(min(max(3.0 / rate, 1.0), 1e5)) if rate > 0 else 20.0
    x0 = torch.linspace(0.2, 1.0, tokens, dtype=torch.float64)
    t = torch.linspace(0.0, t_max, 200, dtype=torch.float64)
    x = token_ode(mu, sd, b, x0, t)
    regime = token_regime(mu, sd, b, x0)
    lim = max(1.0, 1.5 * abs(mu))
    pd = phase_diagram((-lim, lim), (-3.0, 3.0), b, n=121)
    return TokenPicture(t=_np(t), x=_np(x), regime=str(regime), mu_axis=np.asarray(pd["mu"], float),
                        sdx_axis=np.asarray(pd["sdx"], float), regimes=np.asarray(pd["regime"]),
                        labels=list(pd["labels"]), marker=(mu, sd * float(x0[-1])), params=p)


__all__ = ["FAMILIES", "PRESETS", "Preset", "SpectraController", "SpectrumFrame", "Stability",
           "TokenPicture", "build_model", "compare_stability", "model_frame", "token_picture"]
