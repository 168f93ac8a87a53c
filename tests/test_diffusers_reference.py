"""The DDPM ancestral and DDIM steps of `sbm.core.samplers` against diffusers' reference schedulers.

Both sides get the same ε (a model whose eps() returns a fixed tensor), the same timesteps
and the same noise, and must give the same `prev_sample` to 1e-5.

Conventions and how they are matched:

- Timesteps. diffusers' integer timestep k is `DDPMSchedule`'s index i = k, at time
  t = (k+1)/N (`DDPMSchedule.time(k)`); our betas are the scheduler's own `betas` (float32,
  widened to float64). diffusers keeps ᾱ in float32, so near k = 0, where 1 − ᾱ_k ≈ 2e-4,
  its 1 − ᾱ carries a relative rounding error ~5e-4 and single steps differ by ~2e-4; the
  tests give the schedulers ᾱ = cumprod(1 − β) in float64 (the same formula, as `_pair`
  does by assigning `alphas_cumprod`), so that they compare formulas, not float32 rounding.
- Options. `clip_sample=False` (diffusers clamps x̂₀ to [-1, 1] by default; our samplers
  never clip), `prediction_type="epsilon"`, DDPM `variance_type="fixed_small"` (β̃, Ho et al.
  eq. 7), DDIM `set_alpha_to_one=True`, `steps_offset=0`, `timestep_spacing="leading"`.
- Noise. `DDPMScheduler.step` draws its noise as torch.randn(shape, generator) on the CPU,
  as our steps do, so both get equally seeded generators. `DDIMScheduler.step` takes the
  noise as `variance_noise`, drawn from the generator seeded as ours.
- The final step. diffusers' last step goes from timestep 0 to "−1", where ᾱ = 1 (DDPM:
  `self.one`; DDIM with set_alpha_to_one): the noise-free x̂₀. Our grids end at index 0
  (t_min = 1/N) and the final Tweedie denoise x̂₀ = model.x0(x, t_min) takes that step;
  the two agree (tested below). With set_alpha_to_one=False diffusers' DDIM would end at
  ᾱ_0 instead, i.e. at t_min without the denoise.
- Subsampled grids. DDIM's `step` goes from k to k − N/n whatever the spacing; our step
  goes between any two times given to it, so single steps are compared on the "leading"
  grid k, k − N/n. Our own `DDPMSchedule.grid(n)` is diffusers' "linspace" spacing.
"""

from functools import partial

import pytest
import torch

from sbm.core.model import from_eps
from sbm.core.processes import DDPMSchedule
from sbm.core.samplers import ddim_step, ddpm_step, integrate, run_loop
from sbm.core.tensor import bcast

diffusers = pytest.importorskip("diffusers")

N = 1000
SHAPE = (2, 3, 4, 4)
SCHEDULES = ["linear", "squaredcos_cap_v2"]


class FixedEps:
    """A model whose ε̂(x, t) is `eps` (a fixed tensor) or `eps(x, k)` (k: the DDPM index)."""

    def __init__(self, eps, process: DDPMSchedule):
        self.e, self.process = eps, process

    def eps(self, x, t, cond=None):
        return self.e(x, self.process.index(t)[0].item()) if callable(self.e) else self.e

    def x0(self, x, t, cond=None):
        a, s = self.process.marginal(t)
        return from_eps(self.eps(x, t), x, a, s, "x0")

    def score(self, x, t, cond=None):
        return -self.eps(x, t) / bcast(self.process.sigma(t), x)


def _pair(schedule: str):
    """diffusers' DDPM and DDIM schedulers and our DDPMSchedule on the same betas; the
    schedulers' ᾱ recomputed in float64 (see the module docstring)."""
    kw = dict(num_train_timesteps=N, beta_schedule=schedule, clip_sample=False, prediction_type="epsilon")
    ddpm = diffusers.DDPMScheduler(variance_type="fixed_small", **kw)
    ddim = diffusers.DDIMScheduler(set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading", **kw)
    process = DDPMSchedule(ddpm.betas.double())
    for sched in (ddpm, ddim):
        sched.alphas_cumprod = process.alphas_cumprod.clone()
    ddpm.one = torch.tensor(1.0, dtype=torch.float64)
    ddim.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return ddpm, ddim, process


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)  # x_t, ε̂


def _t(process, k):
    return process.time(torch.tensor(k))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("k", [999, 500, 1])
def test_ddpm_step_matches_diffusers(schedule, k):
    """One ancestral step k -> k−1 (Ho et al. eq. 6–7, variance β̃_k)."""
    sched, _, process = _pair(schedule)
    x, eps = _inputs()
    ref = sched.step(eps, k, x, generator=torch.Generator().manual_seed(1)).prev_sample
    ours = ddpm_step(FixedEps(eps, process), x, _t(process, k), _t(process, k - 1),
                     generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_subsampled_ddpm_step_matches_diffusers(schedule):
    """With n = 50 inference steps diffusers' DDPM steps k -> k − 20 with the posterior between
    the two (β_t = 1 − ᾱ_k/ᾱ_{k−20}): our step between any two times, eq. (0) of the samplers."""
    sched, _, process = _pair(schedule)
    sched.set_timesteps(50)
    assert 500 in sched.timesteps and 480 in sched.timesteps
    x, eps = _inputs()
    ref = sched.step(eps, 500, x, generator=torch.Generator().manual_seed(1)).prev_sample
    ours = ddpm_step(FixedEps(eps, process), x, _t(process, 500), _t(process, 480),
                     generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("k", [980, 500, 20])
def test_ddim_step_matches_diffusers(schedule, eta, k):
    """One DDIM step k -> k − 20 on the 50-step "leading" grid (Song et al. eq. 12, σ(η) of eq. 16)."""
    _, sched, process = _pair(schedule)
    sched.set_timesteps(50)
    step = N // 50
    assert k in sched.timesteps and k - step in sched.timesteps
    x, eps = _inputs()
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    ref = sched.step(eps, k, x, eta=eta, variance_noise=noise if eta > 0 else None).prev_sample
    ours = ddim_step(FixedEps(eps, process), x, _t(process, k), _t(process, k - step), eta=eta,
                     generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_final_step_is_the_tweedie_denoise(schedule):
    """diffusers' last step (timestep 0 -> ᾱ = 1, no noise) = our final denoise at t_min."""
    ddpm, ddim, process = _pair(schedule)
    ddim.set_timesteps(50)
    x, eps = _inputs()
    model = FixedEps(eps, process)
    identity = lambda m, x, i, sched, cond=None, generator=None: x  # noqa: E731 (denoise only)
    ours = run_loop(identity, model, x, _t(process, 0).reshape(1), denoise=True).x
    torch.testing.assert_close(ours, ddpm.step(eps, 0, x).prev_sample, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours, ddim.step(eps, 0, x, eta=0.5).prev_sample, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_whole_trajectories_match_diffusers(schedule):
    """The full loops agree too, with ε̂(x, k) the exact ε-prediction for data N(0, ¼ I),
    σ_k x / (ᾱ_k/4 + σ_k²) (an ε̂ unrelated to x would make x̂₀ ~ x/√ᾱ explode at the cosine
    schedule's ᾱ_999 ≈ 1e-9): DDIM (η = 0) over the 50-step grid 980, …, 0 then the denoise
    vs diffusers' 50 steps; DDPM ancestral over all 1000 steps with equally seeded generators
    (the noise is drawn in the same order). Both apply the same float32 operations in the
    same order, so they agree to the bit; 1e-5 as for single steps. The samples end with
    std ≈ ½, the data's."""
    ddpm, ddim, process = _pair(schedule)
    ab = process.alphas_cumprod
    eps_fn = lambda x, k: (((1 - ab[k]) ** 0.5) / (ab[k] / 4 + 1 - ab[k])).float() * x  # noqa: E731
    model = FixedEps(eps_fn, process)
    x_T, _ = _inputs()

    ddim.set_timesteps(50)
    ref = x_T
    for k in ddim.timesteps:
        ref = ddim.step(eps_fn(ref, int(k)), k, ref, eta=0.0).prev_sample
    out = integrate(partial(ddim_step, eta=0.0), model, x_T, process.time(ddim.timesteps), denoise=True)
    torch.testing.assert_close(out.x, ref, atol=1e-5, rtol=1e-5)
    assert out.nfe == 50

    g = torch.Generator().manual_seed(3)
    ref = x_T
    for k in ddpm.timesteps:
        ref = ddpm.step(eps_fn(ref, int(k)), k, ref, generator=g).prev_sample
    out = integrate(ddpm_step, model, x_T, process.grid(), denoise=True, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out.x, ref, atol=1e-5, rtol=1e-5)
    assert out.nfe == N

