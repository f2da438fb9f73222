"""A toy page: a small MLP learns y = sin(3x) live. The template for a new page: its
controller (settings + what to train), its view (widgets + the shared run panel) and one
registry entry; the platform does the rest (thread, pause/resume/stop, progress, loss curve,
checkpoints, URL-free sessions, clean-up)."""

import panel as pn
import param
import torch

from explorer.controllers.run import RunController
from explorer.pages import Page, register
from explorer.training.loop import LoopConfig, Task, TrainingLoop
from explorer.views.base import PageView
from explorer.views.run_panel import RunPanel


class Regression(Task):
    """Fit y = sin(3x) on [-1, 1] with a one-hidden-layer tanh MLP (full batch)."""

    name = "toy-regression"

    def __init__(self, hidden: int, seed: int = 0):
        self.x = torch.linspace(-1, 1, 256).unsqueeze(1)          # (256, 1)
        self.y = torch.sin(3 * self.x)
        with torch.random.fork_rng(devices=[]):                   # seeded, never globally
            torch.manual_seed(seed)
            self.model = torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.Tanh(),
                                             torch.nn.Linear(hidden, 1))

    def loss(self, model, step):
        return torch.mean((model(self.x) - self.y) ** 2)

    @torch.no_grad()
    def evaluate(self, model):
        return {"mse": float(torch.mean((model(self.x) - self.y) ** 2))}


class ToyController(RunController):
    hidden = param.Integer(default=32, bounds=(1, 512), doc="Hidden units of the MLP.")
    lr = param.Number(default=1e-2, bounds=(1e-5, 1.0), doc="Learning rate (Adam).")
    steps = param.Integer(default=400, bounds=(1, 1_000_000), doc="Planned optimisation steps.")
    run_name = "toy"

    def _loop(self) -> TrainingLoop:
        config = LoopConfig(lr=self.lr, planned_steps=self.steps, eval_every=50)
        return TrainingLoop(Regression(self.hidden), config)

    def new_run(self):
        loop = self._loop()                       # settings validated here, on the UI thread
        return lambda run: loop

    def load_trainer(self, path):
        return self._loop().restore(path)


class ToyPanel(PageView):
    def __init__(self, controller: ToyController | None = None, *, sync_url: bool = False):
        super().__init__(controller or ToyController())
        c = self.controller
        self.run = RunPanel(c, self)
        self.sidebar = pn.Column(pn.widgets.IntInput.from_param(c.param.hidden),
                                 pn.widgets.FloatInput.from_param(c.param.lr),
                                 pn.widgets.IntInput.from_param(c.param.steps), self.run)
        self.main = pn.Column(self.status_line(), self.run.loss.pane, sizing_mode="stretch_width")

    def show(self, progress) -> None:
        self.run.show(progress)


PAGE = register(Page("toy", "Toy regression", "◆", ToyPanel, "An MLP learns sin(3x) live."))
