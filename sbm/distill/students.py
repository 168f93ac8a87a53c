"""Distillation: a few-step student from a many-step teacher.

Teacher and student are anything with the samplers' interface (``score/eps/x0(x, t, cond)``
and ``.process``): a `ScoreModel`, an `AnalyticScoreModel`, or a guidance wrapper — passing
a `sbm.core.guidance.ClassifierFreeGuidance` teacher folds the guidance into the student. `cond`
goes unchanged to the teacher and to the student. Notation of `sbm.core.processes`:
x_t = α_t x₀ + σ_t ε, SNR(t) = α_t²/σ_t², and the scaled pair y = x/α_t, σ̃_t = σ_t/α_t.

**DDIM is Euler on the probability-flow ODE.** With ε̂ = model.eps(x_t, t) and
x̂₀ = (x_t − σ_t ε̂)/α_t, the η = 0 DDIM step from t to s (`sbm.core.samplers`, eq. 7) is::

    x_s = α_s x̂₀ + σ_s ε̂ = (α_s/α_t) x_t + (σ_s − α_s σ̃_t) ε̂                              (1)

i.e. y_s = y_t + (σ̃_s − σ̃_t) ε̂: Euler's method on the PF-ODE dy/dσ̃ = ε̂(α y, t) (Song, Meng &
Ermon 2021, eq. 14; Karras et al. 2022, eq. 4 with s(t) = α_t). Heun's method on the same
ODE (Karras et al., Alg. 1) is (1) with ε̂ replaced by ½[ε̂(x_t, t) + ε̂(x_s⁽¹⁾, s)], where
x_s⁽¹⁾ is (1)'s result                                                                      (2)

**Progressive distillation** (Salimans & Ho 2022, Alg. 2). The teacher's grid has 2N steps,
G_0 = 1 > G_1 > … > G_2N = t_min; the student takes the N steps between its even points. Per
example a student step i ~ U{0, …, N−1} is drawn: t = G_2i, u = G_2i+1, s = G_2i+2,
x_t = α_t x₀ + σ_t ε, and the teacher takes two steps (1) t → u → s, landing on x_s. One
student step (1) from t lands on x_s exactly iff its x̂₀ is::

    x̃ = (x_s − (σ_s/σ_t) x_t) / (α_s − (σ_s/σ_t) α_t)                                      (3)

(solve x_s = α_s x̂₀ + σ_s (x_t − α_t x̂₀)/σ_t for x̂₀; the denominator σ_s (α_s/σ_s − α_t/σ_t)
is > 0 because the SNR increases along the grid). The loss per example, summed over the
dimensions like `sbm.core.losses`::

    λ(t) ‖x̂₀,θ(x_t, t) − x̃‖²,   λ = 1 + SNR(t) ("snr_plus_one") or max(SNR(t), 1) ("truncated_snr")   (4)

— Salimans & Ho's "SNR+1" and "truncated SNR" weightings; SNR(t)·‖Δx̂₀‖² = ‖Δε̂‖² is the
ε-loss, which λ follows at low noise, while λ ≥ 1 keeps x̂₀ trained where α_t → 0.

*The last step and the final denoise.* The samplers stop at t_min, where σ > 0, and (with
`denoise`, the default) return Tweedie's x̂₀ = model.x0(x, t_min) — which is the DDIM step
(1) to (α, σ) = (1, 0). On Salimans & Ho's grid, which ends at σ = 0, that is the last DDIM
step; here it is an extra evaluation of the student as of the teacher. With `denoise=True`
the loss therefore draws i ~ U{0, …, N}: level i = N is the denoise, t = t_min, where the
teacher's "two steps" are the identity t_min → t_min and its own denoise, so x_s =
teacher.x0(x_t, t_min) and (3) with (α_s, σ_s) = (1, 0) gives x̃ = x_s. A student that is exact
at every level reproduces the teacher's sampler output: `integrate(ddim_step, student, x_T,
G[::2], denoise=d)` = `integrate(ddim_step, teacher, x_T, G, denoise=d)`. (Steps that end at
s = t_min use (3) as is: σ_{t_min} > 0.)

*A better first teacher.* Eq. (3) holds whatever lands on x_s, so the teacher's two steps may
be any solver's: `teacher_solver` = "heun" makes round 1's target two Heun steps (2), a more
accurate solution of the ODE than DDIM's on the same grid (four evaluations instead of two).
Later rounds' teachers are students, trained to take DDIM steps: their steps stay (1).

`progressive_distillation` runs the rounds teacher_steps → teacher_steps/2 → … → steps: each
student starts as a copy of its teacher and becomes the next round's teacher. All grids are
nested in the finest one (`distillation_grid`), so each student's grid is every other point
of its teacher's.

**Consistency distillation** (Song, Dhariwal, Chen & Sutskever 2023, Alg. 2). A consistency
function maps every point (x_t, t) of a PF-ODE trajectory to the trajectory's point at t_min =
process.t_min. In (y, σ̃) the PF-ODE is the VE ODE of the paper, so its parameterisation
applies there; mapped back to x at t_min (α_min = α(t_min), σ̃_min = σ̃(t_min))::

    f_θ(x, t) = α_min [c_skip(t) x/α_t + c_out(t) F_θ(x, t)]                                  (5)
    c_skip(t) = σ_d² / ((σ̃_t − σ̃_min)² + σ_d²),   c_out(t) = (σ̃_t − σ̃_min) σ_d / √(σ̃_t² + σ_d²)   (6)

with σ_d the data's standard deviation and F_θ the raw output of a `ScoreModel` network (its
c_in included). For α ≡ 1 (VE, NCSN) this is exactly the paper's; (5) is evaluated as
[c_skip α_min/α_t] x + [c_out α_min] F, so at t = t_min the coefficients are exactly 1 and 0
and f_θ(x, t_min) = x bit for bit (the boundary condition). Over a grid G_0 = 1 > … > G_N =
t_min, per example n ~ U{0, …, N−1}, t = G_n, s = G_n+1::

    x_t = α_t x₀ + σ_t ε,   x̂_s = Φ(x_t; t → s) (teacher step (1) or (2)),
    L = mean over dims of (f_θ(x_t, t) − f_θ⁻(x̂_s, s))²                                      (7)

and after every optimizer step the target network θ⁻ ← μ θ⁻ + (1 − μ) θ (stop-gradient),
starting from θ⁻ = θ. The loss object owns θ⁻; `sbm.train.loop.train` updates it through its
`after_step` hook and keeps it in its checkpoints through `extra_state`, so a resumed run is
exact (`consistency_distillation` wires both). The student is a `ConsistencyModel`, whose
``x0`` is f_θ: the samplers use it unchanged, and `sbm.core.samplers.consistency_sample` is the
paper's multistep sampler.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from sbm import io
from sbm.config.params import WEIGHTINGS, DistillParams, TextParams, TrainParams
from sbm.core.guidance import GuidedModel
from sbm.core.model import Predicts, ScoreModel, from_eps, to_eps
from sbm.core.samplers import ddim_update
from sbm.core.tensor import bcast
from sbm.models.score import load_model, model_from_config, save_model
from sbm.text.conditioning import caption_loss, class_prompts, prompt_ids, text_encoder
from sbm.text.conditioning import cfg as guided
from sbm.text.net import load_text_model, text_net_from_config
from sbm.train.loop import fingerprint, train

Marginals = tuple[Tensor, Tensor]  # (α, σ), each (B,) float64
#: a teacher ODE step ``solver(teacher, x, t, s, cond) -> x_s``; x (B, ...), t and s (B,) times
Solver = Callable[..., Tensor]
#: maps a distillation loss ``loss(model, x0, cond) -> (B,)`` to the objective trained, e.g.
#: ``lambda loss: caption_loss(loss, encoder, templates, p_uncond)`` for a text-conditional teacher
LossWrapper = Callable[[Callable[..., Tensor]], Callable[..., Tensor]]
#: the loop's ``on_checkpoint(model, step, live)`` of a round (`sbm.train.loop`; e.g. a `sbm.train.monitor.Monitor`)
OnCheckpoint = Callable[[nn.Module, int, object], None]
#: ``monitor(student_steps) -> on_checkpoint`` of the round training a student that samples with that many
#: steps (None: nothing shown): the rounds' students are shown sampled their own way
RoundMonitor = Callable[[int], OnCheckpoint | None]

# ---------------------------------------------------------------- helpers


def marginals(process, t: Tensor) -> Marginals:
    """(α_t, σ_t) at the times t (B,), in float64 (as the samplers compute them)."""
    a, s = process.marginal(t.double())
    return a.double(), s.double()


def _coef(c: Tensor, x: Tensor) -> Tensor:
    """A per-example coefficient (B,) as (B, 1, …, 1) in x's dtype and on its device."""
    return bcast(c.to(device=x.device, dtype=x.dtype), x)


def _take(m: Marginals, i: Tensor) -> Marginals:
    return m[0][i], m[1][i]


def _follow(module, device) -> None:
    """Move an nn.Module (a teacher, a target network) to `device` if its tensors live elsewhere."""
    if isinstance(module, nn.Module):
        first = next(itertools.chain(module.parameters(), module.buffers()), None)
        if first is not None and first.device != device:
            module.to(device)


def check_grid(process, grid: Tensor, what: str = "grid") -> Marginals:
    """The float64 marginals (α, σ) (K,) of a decreasing grid of K ≥ 2 times; ValueError
    unless the times decrease strictly, σ > 0 and the SNR increases strictly along it (a
    discrete process cannot have more grid points than steps)."""
    grid = torch.as_tensor(grid)
    if grid.dim() != 1 or len(grid) < 2:
        raise ValueError(f"{what}: need a 1-d tensor of at least 2 times, got shape {tuple(grid.shape)}")
    if not (grid[1:] < grid[:-1]).all():
        raise ValueError(f"{what}: times must decrease strictly from 1 to t_min (a discrete process has at most "
                         "its own number of steps)")
    a, s = marginals(process, grid)
    if not (s > 0).all():
        raise ValueError(f"{what}: σ(t) must be > 0 at every grid time")
    snr = a / s
    if not (snr[1:] > snr[:-1]).all():
        raise ValueError(f"{what}: the noise levels must be distinct (α/σ increasing along the grid); a "
                         "discrete process has at most its own number of steps")
    return a, s


def distillation_grid(process, steps: int, finest_steps: int) -> Tensor:
    """The (steps + 1,) times of a `steps`-step DDIM sampler nested in the finest grid
    process.grid(finest_steps + 1): every (finest_steps / steps)-th point, 1 … t_min. A
    round's student grid is thus every other point of its teacher's. For the continuous
    processes it is process.grid(steps + 1) up to float rounding."""
    if steps < 1 or finest_steps % steps:
        raise ValueError(f"distillation_grid: steps = {steps} must divide finest_steps = {finest_steps}")
    return process.grid(finest_steps + 1)[:: finest_steps // steps]


def trainable_core(model) -> ScoreModel:
    """The trainable model inside `model`: itself if it is a ScoreModel, else (through guidance
    wrappers' `.model`) the first wrapped ScoreModel. ValueError if there is none."""
    inner = model
    while not isinstance(inner, ScoreModel):
        if not isinstance(inner, GuidedModel):
            raise ValueError(f"{type(model).__name__} has no trainable network: pass student= explicitly "
                             "(e.g. a ScoreModel of the data's shape)")
        inner = inner.model
    return inner


# ---------------------------------------------------------------- DDIM / Heun teacher steps


def ddim_solver(teacher, x: Tensor, t: Tensor, s: Tensor, cond=None) -> Tensor:
    """Eq. (1) from t to s, per example (t, s (B,) times); one teacher evaluation. For scalar
    times it is `sbm.core.samplers.ddim_step` with η = 0."""
    p = teacher.process
    return ddim_update(x, teacher.eps(x, t, cond), marginals(p, t), marginals(p, s))


def heun_solver(teacher, x: Tensor, t: Tensor, s: Tensor, cond=None) -> Tensor:
    """Eq. (2): Heun's method on dy/dσ̃ = ε̂ from t to s, per example; two teacher evaluations."""
    mt, ms = marginals(teacher.process, t), marginals(teacher.process, s)
    eps_t = teacher.eps(x, t, cond)
    eps_s = teacher.eps(ddim_update(x, eps_t, mt, ms), s, cond)
    return ddim_update(x, 0.5 * (eps_t + eps_s), mt, ms)


SOLVERS: dict[str, Solver] = {"ddim": ddim_solver, "heun": heun_solver}


# ---------------------------------------------------------------- progressive distillation


def distillation_weight(alpha: Tensor, sigma: Tensor, weighting: str) -> Tensor:
    """λ of eq. (4) from α_t, σ_t (B,): 1 + SNR ("snr_plus_one") or max(SNR, 1) ("truncated_snr")."""
    snr = (alpha / sigma) ** 2
    if weighting == "snr_plus_one":
        return 1 + snr
    if weighting == "truncated_snr":
        return snr.clamp(min=1.0)
    raise ValueError(f"weighting = {weighting!r}: allowed {', '.join(WEIGHTINGS)}")


def progressive_target(x_t: Tensor, x_s: Tensor, mt: Marginals, ms: Marginals) -> Tensor:
    """x̃ of eq. (3): the x̂₀ with which one DDIM step (1) from (x_t, t) lands on x_s at s.
    x_t, x_s (B, ...); mt = (α_t, σ_t), ms = (α_s, σ_s) (B,); (α_s, σ_s) = (1, 0) gives x_s."""
    (a_t, s_t), (a_s, s_s) = mt, ms
    ratio = s_s / s_t
    denom = a_s - ratio * a_t
    return _coef(1 / denom, x_t) * x_s - _coef(ratio / denom, x_t) * x_t


class ProgressiveDistillationLoss:
    """Eq. (3)–(4) as ``loss(model, x0, cond=None) -> (B,)``: the student `model` (anything with
    ``x0(x, t, cond)``, e.g. a `ScoreModel` of any prediction) learns to take one DDIM step
    where `teacher` takes two.

    grid: the teacher's (2N + 1,) decreasing times 1 … t_min (the student's are grid[::2]);
    weighting: "snr_plus_one" | "truncated_snr"; denoise: also distil the final denoise at
    t_min (level N, module docstring). Levels, times and noise come from torch's global
    generator (which `sbm.train.loop.train` seeds per step). The teacher runs without gradients."""

    def __init__(self, teacher, grid: Tensor, *, weighting: str = "snr_plus_one", denoise: bool = True,
                 solver: str | Solver = "ddim"):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting = {weighting!r}: allowed {', '.join(WEIGHTINGS)}")
        grid = torch.as_tensor(grid)
        if grid.dim() != 1 or len(grid) < 3 or len(grid) % 2 == 0:
            raise ValueError(f"the teacher's grid needs 2N + 1 >= 3 times (N student steps), got shape "
                             f"{tuple(grid.shape)}")
        a, s = check_grid(teacher.process, grid, "progressive distillation grid")
        if isinstance(solver, str) and solver not in SOLVERS:
            raise ValueError(f"solver = {solver!r}: allowed {', '.join(SOLVERS)}")
        self.solver = SOLVERS[solver] if isinstance(solver, str) else solver
        self.teacher, self.grid, self.weighting, self.denoise = teacher, grid, weighting, bool(denoise)
        self.student_steps = (len(grid) - 1) // 2
        # the grid's marginals, then the end of the denoise step, (α, σ) = (1, 0), at index 2N + 1
        self.table = (torch.cat([a, a.new_ones(1)]), torch.cat([s, s.new_zeros(1)]))

    @property
    def n_levels(self) -> int:
        """The student's evaluations that are distilled: its N steps, and the denoise if `denoise`."""
        return self.student_steps + int(self.denoise)

    def indices(self, level: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Table indices of (t, u, s) for student levels (B,): (2i, 2i+1, 2i+2) for a step and
        (2N, 2N, 2N+1) for the denoise level i = N."""
        last = level == self.student_steps
        i_t = 2 * level
        return i_t, torch.where(last, i_t, i_t + 1), torch.where(last, i_t + 1, i_t + 2)

    def teacher_target(self, x_t: Tensor, level: Tensor, cond=None) -> Tensor:
        """x̃ of eq. (3) for x_t (B, ...) at the times grid[2·level], level (B,) long: the teacher's
        two `solver` steps t → u → s (DDIM: 1 teacher evaluation each, Heun: 2), batched over the
        levels; at the denoise level the teacher's x̂₀ (one evaluation)."""
        i_t, i_u, i_s = self.indices(level.cpu())
        mt, ms = _take(self.table, i_t), _take(self.table, i_s)
        last = (i_u == i_t).to(x_t.device)  # the denoise level: identity half, then the teacher's x̂₀
        grid = self.grid.to(x_t.device)
        t, u, s = grid[i_t], grid[i_u], grid[i_s.clamp(max=len(grid) - 1)]
        _follow(self.teacher, x_t.device)
        x_s = torch.empty_like(x_t)
        with torch.no_grad():
            for rows, denoise in ((~last).nonzero().squeeze(1), False), (last.nonzero().squeeze(1), True):
                if not len(rows):
                    continue
                c = cond[rows] if isinstance(cond, Tensor) else cond
                if denoise:
                    x_s[rows] = self.teacher.x0(x_t[rows], t[rows], c)
                else:
                    x_u = self.solver(self.teacher, x_t[rows], t[rows], u[rows], c)
                    x_s[rows] = self.solver(self.teacher, x_u, u[rows], s[rows], c)
            return progressive_target(x_t, x_s, mt, ms)

    def __call__(self, model, x0: Tensor, cond=None) -> Tensor:
        """Eq. (4) per example, (B,); x0 (B, ...) clean data."""
        level = torch.randint(0, self.n_levels, (x0.shape[0],))
        mt = _take(self.table, 2 * level)
        t = self.grid[2 * level].to(x0.device)
        x_t = _coef(mt[0], x0) * x0 + _coef(mt[1], x0) * torch.randn_like(x0)
        target = self.teacher_target(x_t, level, cond)
        weight = distillation_weight(*mt, self.weighting).to(device=x0.device, dtype=x0.dtype)
        return weight * (model.x0(x_t, t, cond) - target).flatten(1).pow(2).sum(1)


# ---------------------------------------------------------------- consistency models


def _with_boundary(process, t: Tensor) -> tuple[Marginals, Marginals]:
    """Float64 marginals at t (B,) and at t_min, the latter computed on `t`'s dtype so that
    t = t_min gives bit-identical values (the exact boundary condition of eq. 5)."""
    return marginals(process, t), marginals(process, torch.full_like(t, process.t_min))


def consistency_coefficients(process, t: Tensor, sigma_data: float) -> tuple[Tensor, Tensor]:
    """(c_skip(t), c_out(t)) of eq. (6), each (B,) float64, on σ̃ = σ/α with σ̃_min at process.t_min:
    c_skip(t_min) = 1 and c_out(t_min) = 0 exactly."""
    ((a_t, s_t), (a_m, s_m)) = _with_boundary(process, t)
    sig, sig_min = s_t / a_t, s_m / a_m
    gap = sig - sig_min
    c_skip = sigma_data**2 / (gap**2 + sigma_data**2)
    c_out = gap * sigma_data / (sig**2 + sigma_data**2).sqrt()
    return c_skip, c_out


class ConsistencyModel(ScoreModel):
    """The consistency function f_θ of eq. (5)–(6) behind the samplers' interface: ``x0(x, t,
    cond)`` is f_θ (the estimate of the PF-ODE trajectory's point at t_min ≈ x₀); eps and score
    follow from it by `sbm.core.model` eq. (1).

    A `ScoreModel` whose raw output F_θ = self(x, t, cond) (its network with c_in, and cond for a
    conditional net) is read through eq. (5) instead of as `prediction`; built from `base`, whose
    network (shared, not copied), process and data_std (σ_d) it takes."""

    def __init__(self, base: ScoreModel):
        super().__init__(base.net, base.process, base.prediction, base.data_std)
        self.sigma_data = float(base.data_std)

    def consistency(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        """f_θ(x, t) of eq. (5); x (B, ...), t (B,) -> (B, ...). f_θ(x, t_min) = x exactly."""
        c_skip, c_out = consistency_coefficients(self.process, t, self.sigma_data)
        ((a_t, _), (a_m, _)) = _with_boundary(self.process, t)
        return _coef(c_skip * a_m / a_t, x) * x + _coef(c_out * a_m, x) * self(x, t, cond)

    def predict(self, x: Tensor, t: Tensor, kind: str, cond=None) -> Tensor:
        f = self.consistency(x, t, cond)
        if kind == "x0":
            return f
        a, s = self.process.marginal(t)
        return from_eps(to_eps(f, x, a, s, "x0"), x, a, s, kind)

    def to_config(self) -> dict:
        return {"base": super().to_config()}


def save_consistency_model(path, model: ConsistencyModel, extra: dict | None = None) -> None:
    """A ConsistencyModel as one safetensors file: its network's weights + the base's config."""
    io.save_module(path, model, "consistency_model", {"model": model.to_config()["base"], **(extra or {})})


def load_consistency_model(path) -> tuple[ConsistencyModel, dict]:
    """`save_consistency_model`'s file -> (model in eval mode, meta); io.CheckpointError naming the
    file if it is missing, corrupt or not a consistency model."""
    return io.load_module(path, "consistency_model", lambda meta: ConsistencyModel(model_from_config(meta["model"], text_net_from_config)),
                          "consistency model")


class ConsistencyDistillationLoss:
    """Eq. (7) as ``loss(model, x0, cond=None) -> (B,)`` (mean squared error over dimensions).

    teacher: the samplers' interface; student: the model being trained (a ConsistencyModel, or
    anything whose ``x0`` is a consistency function); its deep copy is the target θ⁻ (`.target`).
    grid: (N + 1,) decreasing times 1 … t_min; solver: "ddim" | "heun" | a `Solver`;
    target_decay: μ. Call `update_target(net)` after every optimizer step (`sbm.train.loop.train`
    does, with ``after_step=loss.update_target``; keep θ⁻ in its checkpoints with
    ``extra_state={"target": loss.target.net}``). The teacher and θ⁻ run without gradients."""

    def __init__(self, teacher, student, grid: Tensor, *, solver: str | Solver = "heun", target_decay: float = 0.95):
        if isinstance(solver, str) and solver not in SOLVERS:
            raise ValueError(f"solver = {solver!r}: allowed {', '.join(SOLVERS)} or a callable")
        if not 0 <= target_decay < 1:
            raise ValueError(f"target_decay = {target_decay}: must be in [0, 1)")
        self.grid = torch.as_tensor(grid)
        self.table = check_grid(teacher.process, self.grid, "consistency distillation grid")
        self.teacher, self.target_decay = teacher, float(target_decay)
        self.solver = SOLVERS[solver] if isinstance(solver, str) else solver
        self.target = copy.deepcopy(student)  # θ⁻ ← θ (Alg. 2)
        if isinstance(self.target, nn.Module):
            self.target.requires_grad_(False)

    @torch.no_grad()
    def update_target(self, net: nn.Module, step: int | None = None) -> None:
        """θ⁻ ← μ θ⁻ + (1 − μ) θ from the trained network `net` (the student's .net)."""
        live = net.state_dict()
        for key, value in self.target.net.state_dict().items():
            src = live[key].to(value.device)
            if value.dtype.is_floating_point:
                value.lerp_(src.to(value.dtype), 1 - self.target_decay)
            else:
                value.copy_(src)

    def __call__(self, model, x0: Tensor, cond=None) -> Tensor:
        """Eq. (7) per example, (B,); x0 (B, ...) clean data."""
        n = torch.randint(0, len(self.grid) - 1, (x0.shape[0],))
        mt = _take(self.table, n)
        t, s = self.grid[n].to(x0.device), self.grid[n + 1].to(x0.device)
        x_t = _coef(mt[0], x0) * x0 + _coef(mt[1], x0) * torch.randn_like(x0)
        _follow(self.teacher, x0.device)
        _follow(self.target, x0.device)
        with torch.no_grad():
            target = self.target.x0(self.solver(self.teacher, x_t, t, s, cond), s, cond)
        return (model.x0(x_t, t, cond) - target).flatten(1).pow(2).mean(1)


# ---------------------------------------------------------------- drivers


@dataclass
class RoundInfo:
    """One training round of a distillation run."""

    student_steps: int  # progressive: the student's DDIM steps; consistency: distill.steps
    teacher_steps: int  # progressive: the teacher's DDIM steps (2 × student); consistency: N
    trained: bool  # False: the round was finished already (resumed at its last step, no step trained)
    final_loss: float | None  # the training loop's last logged loss
    resumed_from: int  # the optimizer step training resumed from (steps_per_round when finished already)
    seconds: float  # the round's training wall time, over every call that trained it (also when reloaded)
    path: str  # the round's student file

    @property
    def name(self) -> str:
        """The round's name (round_<student steps> or consistency): its directory under the
        checkpoints and under the live directory."""
        return Path(self.path).parent.name


def _loop_params(cfg: DistillParams, train_cfg: TrainParams | None) -> TrainParams:
    """The training loop's settings: `train_cfg`'s, with the distillation's steps, batch, lr, lr
    schedule and EMA."""
    base = train_cfg if train_cfg is not None else TrainParams()
    return dataclasses.replace(base, steps=cfg.steps_per_round, batch_size=cfg.batch_size, lr=cfg.lr,
                               lr_schedule=cfg.lr_schedule, ema_decay=cfg.ema_decay,
                               checkpoint_every=min(base.checkpoint_every, cfg.steps_per_round))


def _run_round(student, loss, data: Tensor, loop: TrainParams, *, round_dir: Path, fp: str, sizes: tuple[int, int],
               save, seed: int, cond, live_dir, progress: bool, extra_state=None, after_step=None,
               monitor: RoundMonitor | None = None):
    """Train (a copy of) `student` with `loss` in `round_dir` and save the result there atomically
    as student.safetensors. A finished or interrupted round resumes from the loop's step
    checkpoints there (a finished one trains no step). monitor: the round's `on_checkpoint` from
    its student's steps (sizes[0]), shown in `live_dir` at every checkpoint (a resumed round
    continues its curves). -> (student with the loop's EMA weights, RoundInfo)."""
    path = round_dir / "student.safetensors"
    hook = monitor(sizes[0]) if monitor is not None and live_dir is not None else None
    model, result = train(student, loss, data, loop, seed=seed, ckpt_dir=round_dir, live_dir=live_dir, cond=cond,
                          config_for_fingerprint={"distill_round": fp}, progress=progress,
                          extra_state=extra_state, after_step=after_step, on_checkpoint=hook)
    trained = result.resumed_from < result.steps
    if result.is_main_process and (trained or not path.is_file()):
        save(path, model, {"distill": io.json_safe({"fingerprint": fp, "student_steps": sizes[0],
                                                    "teacher_steps": sizes[1], "final_loss": result.final_loss,
                                                    "seconds": result.total_seconds})})
    return model, RoundInfo(*sizes, trained=trained, final_loss=result.final_loss, resumed_from=result.resumed_from,
                            seconds=result.total_seconds, path=str(path))


def _round_fingerprint(cfg: DistillParams, loop: TrainParams, seed: int, data: Tensor, what, user) -> str:
    skip = ("checkpoint_every", "log_every", "launcher")
    return fingerprint({"distill": dataclasses.asdict(cfg), "round": what, "seed": seed, "n": len(data),
                        "train": {k: v for k, v in vars(loop).items() if k not in skip}, "config": user})


def _wrapped(loss, wrap_loss: LossWrapper | None):
    return loss if wrap_loss is None else wrap_loss(loss)


def _live(live_dir, name: str):
    return None if live_dir is None else Path(live_dir) / name


def progressive_distillation(teacher, data: Tensor, cfg: DistillParams, train_cfg: TrainParams | None = None, *,
                             seed: int, ckpt_dir, student: ScoreModel | None = None, cond: Tensor | None = None,
                             wrap_loss: LossWrapper | None = None, live_dir=None,
                             config_for_fingerprint: dict | None = None, progress: bool = True,
                             monitor: RoundMonitor | None = None) -> tuple[ScoreModel, list[RoundInfo]]:
    """Progressive distillation (Salimans & Ho 2022, Alg. 2) from `teacher` (taking
    cfg.teacher_steps DDIM steps) down to a student taking cfg.steps, halving each round.

    Round r trains a copy of its teacher (round 1: of `student`, default the trainable model in
    `teacher`, e.g. the ScoreModel inside a guidance wrapper) with `ProgressiveDistillationLoss`
    on `data` (N, ...) (and `cond` (N, ...), sliced with the batches and passed to teacher and
    student; or, with `wrap_loss`, to the wrapped loss, which maps it to their condition: e.g.
    `sbm.text.conditioning.caption_loss` turns labels into caption ids) for cfg.steps_per_round steps
    of `sbm.train.loop.train` (settings of `train_cfg`, default TrainParams(), with cfg's steps,
    batch size, lr and EMA; seed + r), checkpointed in ckpt_dir/round_<NNNN> (NNNN: the student's
    steps). The finished round is saved there atomically (student.safetensors, `save_model`) and
    a later call reloads it instead of training; an interrupted round resumes from its step
    checkpoints. Its EMA student is the next round's teacher. Round r's curves go to
    live_dir/round_<NNNN>, with `monitor(NNNN)` shown at its checkpoints (`RoundMonitor`).
    -> (the final student (ScoreModel), one RoundInfo per round)."""
    if cfg.method != "progressive":
        raise ValueError(f"distill.method = {cfg.method!r}: progressive_distillation needs 'progressive'")
    init = student if student is not None else trainable_core(teacher)
    if not isinstance(init, ScoreModel) or isinstance(init, ConsistencyModel):
        raise ValueError(f"the student ({type(init).__name__}) must be a ScoreModel (saved with save_model)")
    loop = _loop_params(cfg, train_cfg)
    infos: list[RoundInfo] = []
    for r, n in enumerate(cfg.rounds):
        grid = distillation_grid(teacher.process, 2 * n, cfg.teacher_steps)
        # round 1's teacher is the score model, solved with cfg.teacher_solver; later rounds' teachers are
        # students, trained to take DDIM steps
        solver = cfg.teacher_solver if r == 0 else "ddim"
        loss = _wrapped(ProgressiveDistillationLoss(teacher, grid, weighting=cfg.weighting, denoise=cfg.denoise,
                                                    solver=solver), wrap_loss)
        fp = _round_fingerprint(cfg, loop, seed, data, {"student_steps": n, "teacher_step": solver},
                                config_for_fingerprint)
        name = f"round_{n:04d}"
        init, info = _run_round(init, loss, data, loop, round_dir=Path(ckpt_dir) / name, fp=fp,
                                sizes=(n, 2 * n), save=save_model, seed=seed + r, cond=cond,
                                live_dir=_live(live_dir, name), progress=progress, monitor=monitor)
        infos.append(info)
        teacher = init
    return init, infos


def consistency_distillation(teacher, data: Tensor, cfg: DistillParams, train_cfg: TrainParams | None = None, *,
                             seed: int, ckpt_dir, student: ConsistencyModel | None = None,
                             cond: Tensor | None = None, wrap_loss: LossWrapper | None = None, live_dir=None,
                             config_for_fingerprint: dict | None = None, progress: bool = True,
                             monitor: RoundMonitor | None = None) -> tuple[ConsistencyModel, list[RoundInfo]]:
    """Consistency distillation (Song et al. 2023, Alg. 2) of `teacher` over process.grid(N + 1),
    N = cfg.teacher_steps, with teacher steps cfg.teacher_solver and target decay μ =
    cfg.target_decay, for cfg.steps_per_round steps of `sbm.train.loop.train` (settings, `cond` and
    `wrap_loss` as in `progressive_distillation`). The student defaults to a ConsistencyModel on
    a copy of the teacher's trainable ScoreModel (its weights initialise F_θ, as in the paper). θ⁻ is kept in
    the step checkpoints (ckpt_dir/consistency), so resume is exact; the finished model is saved
    there atomically (student.safetensors, `save_consistency_model`) and reloaded by a later call.
    Sample it with `sbm.core.samplers.consistency_sample` over process.grid(cfg.steps + 1). Curves
    in live_dir/consistency, with `monitor(cfg.steps)` shown at the checkpoints.
    -> (the student (EMA weights), [RoundInfo])."""
    if cfg.method != "consistency":
        raise ValueError(f"distill.method = {cfg.method!r}: consistency_distillation needs 'consistency'")
    if student is None:
        student = ConsistencyModel(copy.deepcopy(trainable_core(teacher)))
    grid = teacher.process.grid(cfg.teacher_steps + 1)
    loss = ConsistencyDistillationLoss(teacher, student, grid, solver=cfg.teacher_solver,
                                       target_decay=cfg.target_decay)
    loop = _loop_params(cfg, train_cfg)
    fp = _round_fingerprint(cfg, loop, seed, data, "consistency", config_for_fingerprint)
    model, info = _run_round(student, _wrapped(loss, wrap_loss), data, loop, round_dir=Path(ckpt_dir) / "consistency",
                             fp=fp,
                             sizes=(cfg.steps, cfg.teacher_steps), save=save_consistency_model,
                             seed=seed, cond=cond,
                             live_dir=_live(live_dir, "consistency"), progress=progress,
                             extra_state={"target": loss.target.net}, after_step=loss.update_target,
                             monitor=monitor)
    return model, [info]


def distill(teacher, data: Tensor, cfg: DistillParams, train_cfg: TrainParams | None = None, **kwargs):
    """`progressive_distillation` or `consistency_distillation` by cfg.method (same arguments)
    -> (student, [RoundInfo])."""
    run = progressive_distillation if cfg.method == "progressive" else consistency_distillation
    return run(teacher, data, cfg, train_cfg, **kwargs)


def load_student(path) -> tuple[Predicts, dict]:
    """A distilled student of either method from its file: a ScoreModel (progressive, sampled
    with DDIM) or a ConsistencyModel (sampled with `consistency`) -> (model in eval mode, meta)."""
    _, meta = io.load_tensors(path)
    if meta.get("kind") == "consistency_model":
        return load_consistency_model(path)
    return load_text_model(path)


#: distill.method -> the sampler its student takes (`sbm.core.samplers`)
STUDENT_SAMPLERS = {"progressive": "ddim", "consistency": "consistency"}


def save_student(path, student: ScoreModel, extra: dict | None = None) -> None:
    """A student of either method as one safetensors file (`load_student` reads both)."""
    (save_consistency_model if isinstance(student, ConsistencyModel) else save_model)(path, student, extra)


@dataclass
class Teacher:
    """The teacher of params distill.teacher = score: the unconditional model, itself the teacher.

    model: what the student imitates (the samplers' interface); base: its trainable ScoreModel
    (the student starts from a copy); meta: the checkpoint's; path: its file; guidance: the
    classifier-free guidance weight folded into the student (None: no guidance)."""

    model: Predicts
    base: ScoreModel
    meta: dict
    path: str
    guidance: float | None = None

    def conditioning(self, labels: Tensor | None, data_dir) -> tuple[Tensor | None, LossWrapper | None]:
        """(cond, wrap_loss) for `distill`: what the student is conditioned on. None: unconditional."""
        return None, None

    def fingerprint(self) -> dict:
        """What identifies the teacher in the rounds' fingerprints: its weights."""
        return {"teacher": io.state_digest(self.base.net)}

    def evaluation_prompts(self, n_classes: int, n_per_class: int) -> tuple[Tensor, Tensor] | None:
        """What teacher and student are compared on: None, unconditional samples."""
        return None

    def monitor_condition(self, n_classes: int) -> Callable[[int], tuple[Tensor, Tensor]] | None:
        """condition(n) -> (cond, labels) of n samples of the student shown during training (as
        train_text's monitor: digit i mod K, template i mod T), or None: unconditional samples."""
        return None


@dataclass
class TextTeacher(Teacher):
    """distill.teacher = text: the text-conditional model under classifier-free guidance of weight
    `guidance` (`sbm.text.conditioning.cfg`), folded into the student, a copy of that model that
    samples with w = 1 (cond: a prompt's token ids). Captions are drawn from the class labels
    with `templates`, dropped to the empty prompt with probability `p_uncond`, as in train_text."""

    templates: tuple[str, ...] = ()
    p_uncond: float = 0.0

    def conditioning(self, labels, data_dir):
        if labels is None:
            raise ValueError(f"{data_dir}: the data has no class labels; distill.teacher = text builds captions "
                             "from them")
        encoder = text_encoder(self.base)
        return labels, lambda loss: caption_loss(loss, encoder, self.templates, self.p_uncond)

    def evaluation_prompts(self, n_classes, n_per_class):
        """(labels (K·n,), token ids (K·n, L)): n_per_class prompts of each of the K digits from the
        training templates, so samples are scored by the evaluator's accuracy next to FID."""
        labels = torch.arange(n_classes).repeat_interleave(n_per_class)
        return labels, prompt_ids(self.base, class_prompts(labels, self.templates))  # checked before sampling

    def monitor_condition(self, n_classes):
        def prompts(n: int) -> tuple[Tensor, Tensor]:
            labels = torch.arange(n) % n_classes
            return prompt_ids(self.base, class_prompts(labels, self.templates)), labels

        return prompts

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "guidance": {"weight": self.guidance, "templates": list(self.templates),
                                                      "p_uncond": self.p_uncond}}


def load_teacher(kind: str, score_path, text_path, text: TextParams) -> Teacher:
    """The teacher of params distill.teacher ("score": the model at `score_path`; "text": the
    text model at `text_path` guided with params `text`'s weight, templates and p_uncond)."""
    if kind == "score":
        model, meta = load_model(score_path)
        return Teacher(model, model, meta, str(score_path))
    if kind == "text":
        model, meta = load_text_model(text_path)
        return TextTeacher(guided(model, text.weight), model, meta, str(text_path), text.weight,
                           tuple(text.templates), text.p_uncond)
    raise ValueError(f"distill.teacher = {kind!r}: allowed score, text")
