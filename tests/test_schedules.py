"""The time grids of `sbm.core.schedules` and the processes' σ̃ -> t inverses they use, for the VE, VP, sub-VP and DDPM
processes (and the NCSN ladder): end points, strict monotonicity, the Karras formula, equal
log-SNR steps, exact round trips, and `sampler.schedule` picking them in `schedule_for`."""

import math

import pytest
import torch

from sbm.config.params import SCHEDULES as SCHEDULE_NAMES
from sbm.config.params import SamplerParams, parse_params
from sbm.core.processes import VESDE, VPSDE, NCSNLadder, SubVPSDE, process_from_config
from sbm.core.samplers import schedule_for
from sbm.core.schedules import (
    RHO,
    SCHEDULES,
    karras,
    log_snr,
    logsnr,
    sigma_tilde,
    uniform,
)
from sbm.errors import ConfigError

VE = VESDE(0.01, 20.0)
VP = VPSDE()
SUBVP = SubVPSDE()
LADDER = NCSNLadder(0.05, 20.0, 10)
DDPM = process_from_config({"name": "ddpm", "beta_schedule": "linear", "beta_min": 0.1, "beta_max": 20.0,
                            "n_timesteps": 200})
DDPM_COS = process_from_config({"name": "ddpm", "beta_schedule": "cosine", "beta_min": 0.1, "beta_max": 20.0,
                                "n_timesteps": 200})
CONTINUOUS = {"ve": VE, "vp": VP, "subvp": SUBVP, "ncsn": LADDER}
PROCESSES = {**CONTINUOUS, "ddpm": DDPM, "ddpm_cosine": DDPM_COS}


def test_the_registry_holds_exactly_the_configs_schedule_names():
    assert tuple(SCHEDULES) == SCHEDULE_NAMES


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("pname", PROCESSES)
@pytest.mark.parametrize("k", [2, 7, 50])
def test_grids_run_from_one_to_t_min_strictly_decreasing(name, pname, k):
    process = PROCESSES[pname]
    t = SCHEDULES[name](process, k)
    assert t.shape == (k,) and t.dtype == torch.float32
    assert t[0].item() == 1.0 and t[-1].item() == pytest.approx(process.t_min, abs=1e-9)
    assert (t[1:] < t[:-1]).all(), t
    assert (sigma_tilde(process, t)[1:] < sigma_tilde(process, t)[:-1]).all()  # every step lowers the noise


@pytest.mark.parametrize("pname", PROCESSES)
def test_uniform_is_the_processs_own_grid(pname):
    process = PROCESSES[pname]
    for k in (None, 5, 33):
        assert torch.equal(uniform(process, k), process.grid(k))


@pytest.mark.parametrize("pname", CONTINUOUS)
def test_karras_reproduces_eq_5(pname):
    """σ̃(t_i) = (σ̃_max^{1/ρ} + i/(K−1)(σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ, ρ = 7 (Karras et al. 2022, eq. 5),
    to the float32 rounding of the times."""
    process, k = CONTINUOUS[pname], 18
    top, bottom = sigma_tilde(process, torch.tensor([1.0, process.t_min])).tolist()
    i = torch.arange(k, dtype=torch.float64)
    expect = (top ** (1 / RHO) + i / (k - 1) * (bottom ** (1 / RHO) - top ** (1 / RHO))) ** RHO
    torch.testing.assert_close(sigma_tilde(process, karras(process, k)), expect, rtol=2e-6, atol=0)


@pytest.mark.parametrize("pname", CONTINUOUS)
def test_logsnr_steps_are_equal_in_lambda(pname):
    process, k = CONTINUOUS[pname], 25
    lam = log_snr(process, logsnr(process, k))
    steps = lam[1:] - lam[:-1]
    top, bottom = log_snr(process, torch.tensor([1.0, process.t_min])).tolist()
    torch.testing.assert_close(steps, torch.full_like(steps, (bottom - top) / (k - 1)), rtol=1e-5, atol=1e-5)


def test_ve_logsnr_is_the_uniform_grid():
    """For VE log σ is affine in t, so equal steps in λ = −2 log σ are equal steps in t."""
    torch.testing.assert_close(logsnr(VE, 13), uniform(VE, 13), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["karras", "logsnr"])
def test_ddpm_grids_take_the_nearest_level(name):
    """Where no two points fall on one level, each time is the DDPM level whose log σ̃ is nearest to
    the continuous formula's. (Linear β: the cosine schedule's capped β_N = 0.999 makes the top
    levels' σ̃ jump, so there points share levels, which `test_ddpm_grids_use_distinct_levels_up_to_all_n`
    covers.)"""
    process, k = DDPM, 12
    t = SCHEDULES[name](process, k)
    top, bottom = sigma_tilde(process, torch.tensor([1.0, process.t_min])).log().tolist()
    if name == "karras":
        i = torch.arange(k, dtype=torch.float64) / (k - 1)
        target = RHO * torch.log(math.exp(top / RHO) + i * (math.exp(bottom / RHO) - math.exp(top / RHO)))
    else:
        target = torch.linspace(top, bottom, k, dtype=torch.float64)
    levels = sigma_tilde(process, process.time(torch.arange(process.n))).log()
    nearest = (levels[None, :] - target[:, None]).abs().argmin(1)
    assert (nearest[1:] < nearest[:-1]).all()  # the premise: distinct nearest levels
    assert torch.equal(process.index(t), nearest)


@pytest.mark.parametrize("name", ["karras", "logsnr"])
@pytest.mark.parametrize("process", [DDPM, DDPM_COS], ids=["linear", "cosine"])
def test_ddpm_grids_use_distinct_levels_up_to_all_n(name, process):
    """Many points round to one level (ρ = 7 crowds both ends of the cosine schedule's σ̃ range);
    they are moved apart so every step moves: K = N gives every level once, K > N is refused."""
    for k in (12, 120):
        idx = process.index(SCHEDULES[name](process, k))
        assert (idx[1:] < idx[:-1]).all() and idx[0] == process.n - 1 and idx[-1] == 0
    assert torch.equal(process.index(SCHEDULES[name](process, process.n)), torch.arange(process.n - 1, -1, -1))
    with pytest.raises(ConfigError, match="at most its N = 200"):
        SCHEDULES[name](process, process.n + 1)


@pytest.mark.parametrize("pname", CONTINUOUS)
def test_the_unclipped_inverse_inverts_sigma_tilde(pname):
    """t -> σ̃(t) -> t on 2001 times in [t_min, 1] (and beyond 1, where the closed forms still hold) with
    clip=False, what the grids use; the NCSN ladder's is the VE time between its levels."""
    process = CONTINUOUS[pname]
    t = torch.linspace(max(process.t_min, 1e-4), 1.5, 2001, dtype=torch.float64)
    back = process.t_from_sigma_tilde(sigma_tilde(process, t), clip=False)
    torch.testing.assert_close(back, t, rtol=1e-10, atol=1e-12)


def test_ddpm_inverse_is_the_nearest_level_in_log_sigma_clipped_or_not():
    levels = DDPM.time(torch.arange(DDPM.n))
    for clip in (True, False):
        assert torch.equal(DDPM.t_from_sigma_tilde(sigma_tilde(DDPM, levels), clip=clip).float(), levels)
    # a σ̃ between levels k and k+1 goes to the one nearer in log σ̃
    lo, hi = sigma_tilde(DDPM, DDPM.time(torch.tensor([40, 41]))).tolist()
    mid = math.sqrt(lo * hi)
    got = DDPM.index(DDPM.t_from_sigma_tilde(torch.tensor([mid * 0.99, mid * 1.01], dtype=torch.float64), clip=False))
    assert got.tolist() == [40, 41]


def test_logsnr_needs_sigma_above_zero_at_t_min():
    with pytest.raises(ConfigError, match="process.t_min = 0.0"):
        logsnr(VPSDE(t_min=0.0), 10)
    t = karras(VPSDE(t_min=0.0), 10)  # Karras' formula goes to σ̃ = 0 without trouble
    assert t[-1].item() == 0.0 and (t[1:] < t[:-1]).all()


def test_schedule_for_picks_the_grid_of_sampler_schedule():
    for name in SCHEDULE_NAMES:
        assert torch.equal(schedule_for(SamplerParams(steps=17, schedule=name), VP), SCHEDULES[name](VP, 17))
        # null steps: as many times as the process's native grid
        assert len(schedule_for(SamplerParams(steps=None, schedule=name), LADDER)) == 10
        assert len(schedule_for(SamplerParams(steps=None, schedule=name), DDPM)) == 200
    assert torch.equal(schedule_for(SamplerParams(steps=17), VP), VP.grid(17))  # the default stays uniform


def test_an_unknown_schedule_is_refused_with_the_allowed_names():
    with pytest.raises(ConfigError, match=r"sampler\.schedule = 'cosine': unknown value; allowed: uniform, karras, "
                                          r"logsnr"):
        parse_params({"sampler": {"schedule": "cosine"}})
