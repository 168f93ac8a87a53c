"""DPM-Solver++ (2M, 3M) and UniPC of `sbm.core.samplers` against diffusers' schedulers, step for step.

Both sides are driven by the same ε: the exact ε = −σ ∇log p_t of the 2-D Gaussian mixture (the
`mixture` fixture) under the process, evaluated at each side's own state; both start from the same
x_T and must agree after every step to 1e-5.

How the conventions are matched (see also tests/test_diffusers_reference.py):

- DDPM (linear β, N = 1000): diffusers' timestep k is `DDPMSchedule`'s index k at t = (k+1)/N; the
  process takes the scheduler's betas and the scheduler our float64 ᾱ. Our schedule is the
  scheduler's own "linspace" timesteps, `process.time(sched.timesteps)`: n points from k = 999
  down to ≈ 999/n.
- Precision: formulas are compared, not float32 rounding. The states are float64 and the
  scheduler's σ̃ = √((1 − ᾱ)/ᾱ) of each step are given in float64 (it rounds them to float32: at
  the top level, α ≈ 0.006, x̂₀ = (x − σ ε)/α loses ~1e-5 to that rounding by cancellation, which
  the multistep differences then carry). DPM-Solver++ still rounds the state to float32 each step.
- The last step: `final_sigmas_type="zero"` steps from the last timestep to σ = 0, which for a
  data-prediction solver is x̂₀ there (order 1, whatever the solver's order) — our final denoise,
  eq. (2), at the schedule's last time. So n inference steps = n evaluations on both sides.
- `lower_order_final=True` (diffusers' default): DPM-Solver++ lowers its order at the last steps of
  runs with fewer than 15 steps, UniPC always; n = 10 and n = 20 test both sides of the 15.
- VP SDE: diffusers' solvers only read σ̃ = σ/α of each step (α = 1/√(1 + σ̃²), σ = σ̃ α — the VP
  marginals exactly), so setting the scheduler's `sigmas` to σ̃ of our VP grid (+ the final 0) runs
  them on the continuous VP SDE; here our Karras grid (`sampler.schedule = karras`).
- UniPC: bh2, predict_x0, corrector on at every step. Its last corrected state is not used by
  either side: the final step goes to σ = 0 from the x̂₀ evaluated at the uncorrected state.
"""

import pytest
import torch

from sbm.config.params import SamplerParams
from sbm.core.model import AnalyticScoreModel
from sbm.core.processes import VPSDE, DDPMSchedule
from sbm.core.samplers import build_sampler
from sbm.core.schedules import karras, sigma_tilde

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("one_thread")

N = 1000
M = 64  # points
#: (sampler params, diffusers scheduler, its solver options)
SOLVERS = {
    "dpmpp_2m": (dict(name="dpmpp_2m"), "DPMSolverMultistepScheduler",
                 dict(solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint")),
    "dpmpp_3m": (dict(name="dpmpp_3m"), "DPMSolverMultistepScheduler",
                 dict(solver_order=3, algorithm_type="dpmsolver++", solver_type="midpoint")),
    "unipc-1": (dict(name="unipc", order=1), "UniPCMultistepScheduler",
                dict(solver_order=1, solver_type="bh2", predict_x0=True)),
    "unipc-2": (dict(name="unipc", order=2), "UniPCMultistepScheduler",
                dict(solver_order=2, solver_type="bh2", predict_x0=True)),
    "unipc-3": (dict(name="unipc", order=3), "UniPCMultistepScheduler",
                dict(solver_order=3, solver_type="bh2", predict_x0=True)),
}


def _scheduler(cls_name: str, options: dict):
    return getattr(diffusers, cls_name)(num_train_timesteps=N, beta_schedule="linear", prediction_type="epsilon",
                                        timestep_spacing="linspace", final_sigmas_type="zero",
                                        lower_order_final=True, **options)


def _setup(cls_name, options, process_name, n):
    """(scheduler with n inference steps, our process, our schedule of n times). The scheduler's
    σ̃ of each step are set in float64 (see the module docstring)."""
    sched = _scheduler(cls_name, options)
    if process_name == "ddpm":
        process = DDPMSchedule(sched.betas.double())
        sched.alphas_cumprod = process.alphas_cumprod.clone()
        sched.set_timesteps(n)
        times = process.time(sched.timesteps)
    else:
        process = VPSDE()
        sched.set_timesteps(n)
        times = karras(process, n)
    sigmas = torch.cat([sigma_tilde(process, times), torch.zeros(1, dtype=torch.float64)])
    if process_name == "ddpm":  # the scheduler's own σ̃ at its timesteps, only wider
        torch.testing.assert_close(sched.sigmas, sigmas.float(), rtol=1e-6, atol=0)
    sched.sigmas = sigmas
    return sched, process, times


def _x_T(mixture, process, g):
    x0, _ = mixture.sample(M, generator=g)
    return process.perturb(x0.double(), torch.ones(M), torch.randn(M, 2, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("process_name", ["ddpm", "vp"])
@pytest.mark.parametrize("n", [10, 20])
def test_multistep_solvers_match_diffusers_step_for_step(mixture, solver, process_name, n):
    kw, cls_name, options = SOLVERS[solver]
    sched, process, times = _setup(cls_name, options, process_name, n)
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    x_T = _x_T(mixture, process, torch.Generator().manual_seed(0))

    ref, x = [], x_T
    for k, t in zip(sched.timesteps, times):
        x = sched.step(model.eps(x, t.expand(M)), k, x).prev_sample
        ref.append(x)

    seen = []
    out = build_sampler(SamplerParams(denoise=True, **kw))(model, x_T, times, callback=lambda i, t, x: seen.append(x))
    assert out.nfe == n  # one evaluation per inference step on both sides
    assert len(seen) == n and torch.equal(seen[0], x_T)
    for j in range(1, n):  # the state at times[j]: diffusers' step j − 1
        torch.testing.assert_close(seen[j], ref[j - 1], atol=1e-5, rtol=1e-5, msg=lambda m: f"step {j}: {m}")
    torch.testing.assert_close(out.x, ref[-1], atol=1e-5, rtol=1e-5)  # the last step to σ = 0: x̂₀
    # the samples are the mixture's, not noise (the comparison above is over real trajectories):
    # their median distance to the nearest mean is ≈ 1.1 (for true samples ≈ 1.2), x_T's ≈ 3
    assert torch.cdist(out.x, mixture.means).min(1).values.median() < 2.0
    assert torch.cdist(x_T, mixture.means).min(1).values.median() > 2.5
