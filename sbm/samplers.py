"""Samplers: one update rule each, one shared loop.

Every sampler is a function ``sample(model, x_T, schedule, *, cond, callback, generator)``
returning a `SampleOutput`. `model` is anything with ``score(x, t, cond)`` and
``x0(x, t, cond)`` (a `ScoreModel`, an analytic score, or a guidance wrapper): samplers
know nothing of guidance or latents. `schedule` is a decreasing tensor of times (K,),
from `schedule_for`; NFE counts network evaluations of whole batches.

Langevin dynamics (Welling & Teh 2011; Song & Ermon 2019, Alg. 1), at level t_i::

    x ← x + (αᵢ / 2) s_θ(x, tᵢ) + √αᵢ z,   z ~ N(0, I),   αᵢ = ε · σᵢ² / σ_L²        (1)

run for T steps per level over a decreasing ladder σ₁ > … > σ_L (annealed) or over the
single smallest level σ_L (plain Langevin MCMC, αᵢ = ε). The optional final denoise is
Tweedie's formula x̂₀ = (x + σ² s_θ(x, t)) / α = model.x0(x, t) at the last level   (2)
(Efron 2011; Jolicoeur-Martineau et al. 2020).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .config import SAMPLERS, ConfigError, SamplerParams


@dataclass
class SampleOutput:
    x: Tensor  # (N, ...) the samples
    nfe: int  # network evaluations (each over the whole batch)
    wall_time_s: float


class CountingModel:
    """Wraps a model and counts its score/x0/eps calls (the NFE)."""

    def __init__(self, model):
        self.model = model
        self.process = model.process
        self.nfe = 0

    def _call(self, name, x, t, cond=None):
        self.nfe += 1
        return getattr(self.model, name)(x, t, cond)

    def score(self, x, t, cond=None):
        return self._call("score", x, t, cond)

    def x0(self, x, t, cond=None):
        return self._call("x0", x, t, cond)

    def eps(self, x, t, cond=None):
        return self._call("eps", x, t, cond)


UpdateFn = Callable[..., Tensor]


def run_loop(
    update: UpdateFn,
    model,
    x: Tensor,
    schedule: Tensor,
    *,
    steps_per_level: int = 1,
    denoise: bool = False,
    cond=None,
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> SampleOutput:
    """The one sampling loop: for each level i of `schedule`, `steps_per_level` calls of
    ``update(model, x, i, schedule, cond=, generator=) -> x``; then optionally eq. (2).

    callback(i, t_i, x) is called after each level."""
    start = time.perf_counter()
    counted = CountingModel(model)
    levels = range(len(schedule))
    bar = tqdm(total=len(schedule) * steps_per_level, desc="sampling", disable=not progress, leave=False)
    with torch.no_grad():
        for i in levels:
            for _ in range(steps_per_level):
                x = update(counted, x, i, schedule, cond=cond, generator=generator)
                bar.update(1)
            if callback is not None:
                callback(i, schedule[i], x)
        if denoise:
            t = schedule[-1].expand(x.shape[0]).to(x.device)
            x = counted.x0(x, t, cond)
    bar.close()
    return SampleOutput(x=x, nfe=counted.nfe, wall_time_s=time.perf_counter() - start)


def langevin_update(model, x, i, schedule, *, step_size: float, cond=None, generator=None) -> Tensor:
    """One step of eq. (1) at level i, with αᵢ = ε σᵢ²/σ_L² (σ_L: the schedule's last level)."""
    t = schedule[i].expand(x.shape[0]).to(x.device)
    sigma_i = model.process.sigma(schedule[i : i + 1])[0]
    sigma_last = model.process.sigma(schedule[-1:])[0]
    alpha = step_size * float(sigma_i / sigma_last) ** 2
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return x + 0.5 * alpha * model.score(x, t, cond) + math.sqrt(alpha) * z


def annealed_langevin(
    model, x_T, schedule, *, step_size: float, steps_per_level: int, denoise: bool = True,
    cond=None, callback=None, generator=None, progress=False,
) -> SampleOutput:
    """Annealed Langevin dynamics (eq. 1 over every level of `schedule`, then eq. 2)."""
    update = partial(langevin_update, step_size=step_size)
    return run_loop(update, model, x_T, schedule, steps_per_level=steps_per_level, denoise=denoise,
                    cond=cond, callback=callback, generator=generator, progress=progress)


def langevin(
    model, x_init, schedule, *, step_size: float, n_steps: int, denoise: bool = False,
    cond=None, callback=None, generator=None, progress=False,
) -> SampleOutput:
    """Plain Langevin MCMC at the single cleanest level of `schedule` (eq. 1, αᵢ = ε)."""
    return annealed_langevin(model, x_init, schedule[-1:], step_size=step_size, steps_per_level=n_steps,
                             denoise=denoise, cond=cond, callback=callback, generator=generator,
                             progress=progress)


# ---------------------------------------------------------------- from params


def schedule_for(cfg: SamplerParams, process) -> Tensor:
    """The decreasing times the sampler named in `cfg` visits (the process's native levels)."""
    return process.grid()


def build_sampler(cfg: SamplerParams) -> Callable[..., SampleOutput]:
    """The sampler named by `sampler.name`, its settings bound from `cfg`."""
    if cfg.name == "annealed_langevin":
        return partial(annealed_langevin, step_size=cfg.step_size, steps_per_level=cfg.steps_per_level,
                       denoise=cfg.denoise)
    if cfg.name == "langevin":
        return partial(langevin, step_size=cfg.step_size, n_steps=cfg.langevin_steps, denoise=cfg.denoise)
    raise ConfigError(f"sampler.name = {cfg.name!r}: unknown; allowed: {', '.join(SAMPLERS)}")


def initial_state(cfg: SamplerParams, process, shape, *, data_range=None, generator=None) -> Tensor:
    """x_T for `shape` = (N, ...): `prior` draws N(0, prior_std² I) (eq. 1's x_T);
    `uniform` draws uniformly over data_range = (low, high) in every coordinate."""
    if cfg.init == "prior":
        return process.prior_sample(shape, generator=generator)
    if data_range is None:
        raise ConfigError("sampler.init = 'uniform' needs the data's value_range (meta.json)")
    lo, hi = data_range
    return lo + (hi - lo) * torch.rand(shape, generator=generator)
