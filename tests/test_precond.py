"""EDM preconditioning and v-prediction (sbm.core.model eqs. 4–5), the EDM and min-SNR-γ
weightings (sbm.core.losses eqs. 6–7) and EDM's log-normal training levels through every
process's inverse of σ̃(t) = σ/α (sbm.core.processes eq. 3), checked against the papers'
formulas, diffusers' EDM and DDPM schedulers, and exact identities on the same draws."""

import dataclasses
import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from sbm.config.params import PREDICTIONS, ObjectiveParams, parse_params
from sbm.core.losses import build_loss, dsm_loss, eps_loss, relative_weight, sample_levels
from sbm.core.model import (AnalyticScoreModel, ScoreModel, c_in, edm_c_in, edm_c_out, edm_c_skip, from_eps,
                            to_eps)
from sbm.core.processes import DDPMSchedule, NCSNLadder, SubVPSDE, VESDE, VPSDE, ddpm_betas, lognormal_t
from sbm.errors import ConfigError
from sbm.models.score import load_model, save_model
from sbm.nets.score import MLPNet

PROCESSES = {
    "ve": lambda: VESDE(0.01, 30.0, 1e-3),
    "vp": lambda: VPSDE(0.1, 20.0, 1e-3),
    "subvp": lambda: SubVPSDE(0.1, 20.0, 1e-3),
    "ncsn": lambda: NCSNLadder(0.01, 30.0, 12),
    "ddpm": lambda: DDPMSchedule(ddpm_betas("linear", 1000, 0.1, 20.0), schedule="linear", beta_min=0.1,
                                 beta_max=20.0),
    "ddpm_cosine": lambda: DDPMSchedule(ddpm_betas("cosine", 200, 0.1, 20.0), schedule="cosine", beta_min=0.1,
                                        beta_max=20.0),
}
CONTINUOUS = ("ve", "vp", "subvp")


class RandomNet(nn.Module):
    """An untrained, nonlinear F(x, c) in float64 behind the `ScoreNet` protocol (the MLP embeds c in float32)."""

    conditional = False

    def __init__(self, dim: int, seed: int, width: int = 32):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(dim + 1, width, generator=g, dtype=torch.float64))
        self.w2 = nn.Parameter(torch.randn(width, dim, generator=g, dtype=torch.float64) / width**0.5)
        self.config = {"kind": "random", "dim": dim}

    def forward(self, x, c):
        return torch.tanh(torch.cat([x, 3 * c[:, None].to(x.dtype)], 1) @ self.w1) @ self.w2


def _levels(process, n=41, dtype=torch.float64):
    """Times inside [t_min, 1] at which every process is defined (a discrete one: its own levels)."""
    if isinstance(process, DDPMSchedule):
        return process.time(torch.arange(process.n)).to(dtype)
    if isinstance(process, NCSNLadder):
        return process.levels_t().to(dtype)
    return torch.linspace(process.t_min, 1.0, n, dtype=dtype)


# ------------------------------------------------------------------ EDM preconditioning, eq. (4)


@pytest.mark.parametrize("sigma_data", [0.5, 1.7])
def test_edm_coefficients_are_karras_table_1_as_diffusers_applies_them(sigma_data):
    """c_skip, c_out, c_in are Table 1's formulas, and D = c_skip x + c_out F, c_in x equal diffusers'
    EDMEulerScheduler.precondition_outputs / precondition_inputs (prediction_type epsilon)."""
    from diffusers import EDMEulerScheduler

    sched = EDMEulerScheduler(sigma_data=sigma_data)
    sig = torch.logspace(-4, 2, 13, dtype=torch.float64)
    sd2 = sigma_data**2
    assert_close(edm_c_skip(sig, sigma_data), sd2 / (sig**2 + sd2), rtol=1e-14, atol=0)
    assert_close(edm_c_out(sig, sigma_data), sig * sigma_data / (sig**2 + sd2) ** 0.5, rtol=1e-14, atol=0)
    assert_close(edm_c_in(sig, sigma_data), 1 / (sig**2 + sd2) ** 0.5, rtol=1e-14, atol=0)
    g = torch.Generator().manual_seed(0)
    x, f = torch.randn(13, 3, generator=g, dtype=torch.float64), torch.randn(13, 3, generator=g, dtype=torch.float64)
    s = sig[:, None]
    assert_close(edm_c_skip(s, sigma_data) * x + edm_c_out(s, sigma_data) * f, sched.precondition_outputs(x, f, s),
                 rtol=1e-12, atol=1e-14)
    assert_close(edm_c_in(s, sigma_data) * x, sched.precondition_inputs(x, s), rtol=1e-12, atol=1e-14)


def test_edm_coefficients_give_unit_variance_input_and_target():
    """Karras et al. 2022 App. B.6 chose them so that, for Var x₀ = σ_d² and x = x₀ + σ n: Var(c_in x) = 1 and the
    effective target (x₀ − c_skip x)/c_out has unit variance: ((1 − c_skip)² σ_d² + c_skip² σ²)/c_out² = 1."""
    sig = torch.logspace(-4, 3, 50, dtype=torch.float64)
    for sd in (0.3, 1.0, 4.0):
        cs, co, ci = edm_c_skip(sig, sd), edm_c_out(sig, sd), edm_c_in(sig, sd)
        assert_close(ci**2 * (sd**2 + sig**2), torch.ones_like(sig), rtol=1e-13, atol=0)
        assert_close(((1 - cs) ** 2 * sd**2 + cs**2 * sig**2) / co**2, torch.ones_like(sig), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_the_input_scaling_is_edms_c_in_on_x_over_alpha(name):
    """eq. (2)'s c_in(t) = edm_c_in(σ̃)/α: every prediction feeds the net c_in(σ̃)·x_t/α, as EDM does."""
    process = PROCESSES[name]()
    t = _levels(process)
    a, s = process.marginal(t)
    assert_close(c_in(a, s, 0.8), edm_c_in(s / a, 0.8) / a, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_an_edm_model_predicts_x0_by_the_preconditioned_denoiser(name):
    """ScoreModel(prediction=edm).x0 = c_skip(σ̃) x_t/α + c_out(σ̃) F, F the raw network output, for every
    process; score/eps come from the same x̂₀ through eq. (1)."""
    process = PROCESSES[name]()
    torch.manual_seed(1)
    model = ScoreModel(RandomNet(3, seed=1), process, "edm", data_std=0.8)
    levels = _levels(process, 64)
    x, t = 3 * torch.randn(64, 3, dtype=torch.float64), levels[torch.randint(0, len(levels), (64,))]
    a, s = (v[:, None] for v in process.marginal(t))
    st = s / a
    with torch.no_grad():
        f = model(x, t)
        assert_close(f, model.net(edm_c_in(st, 0.8) * x / a, t), rtol=1e-12, atol=1e-12)  # input c_in(σ̃)·x_t/α
        expect = edm_c_skip(st, 0.8) * x / a + edm_c_out(st, 0.8) * f
        assert_close(model.x0(x, t), expect, rtol=1e-10, atol=1e-10)
        assert_close(model.score(x, t), -(x - a * expect) / s**2, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_the_edm_denoiser_tends_to_the_identity_as_sigma_vanishes(name):
    """D(x_t/α, σ̃) − x_t/α = −σ̃²/(σ̃² + σ_d²)·x_t/α + c_out F (eq. 4): bounded by σ̃²|x|/(ασ_d²) + σ̃|F| and
    → 0 at rate σ̃ for ANY F (an untrained network), with (D − x_t/α)/σ̃ → F."""
    process = VESDE(1e-7, 10.0, 0.0) if name == "ve" else VPSDE(0.1, 20.0, 0.0)
    torch.manual_seed(2)
    model = ScoreModel(RandomNet(2, seed=2), process, "edm", data_std=0.5)
    x = 2 * torch.randn(256, 2, dtype=torch.float64)
    worst = []
    for sig in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5):
        t = process.t_from_sigma_tilde(torch.full((256,), sig, dtype=torch.float64))
        a, s = (v[:, None] for v in process.marginal(t))
        assert_close(s / a, torch.full_like(s, sig), rtol=1e-9, atol=0)
        with torch.no_grad():
            f, d = model(x, t), model.x0(x, t)
        gap = d - x / a
        assert (gap.abs() <= sig**2 * (x / a).abs() / 0.25 + sig * f.abs() + 1e-12).all()
        assert_close(gap / sig, f, rtol=0, atol=sig * (4 * x.abs().max() + f.abs().max()).item())
        worst.append(gap.abs().max().item())
    assert worst[-1] < 1e-3 * worst[0] and all(b < a for a, b in zip(worst, worst[1:])), worst


# ------------------------------------------------------------------ v-prediction, eq. (5)


def test_v_is_salimans_and_hos_velocity_as_diffusers_computes_it():
    """For DDPM (α² + σ² = 1) from_eps(ε, x_t, 'v') = α ε − σ x₀ = diffusers' DDPMScheduler.get_velocity, and
    reading that v back gives ε and x₀."""
    from diffusers import DDPMScheduler

    process = PROCESSES["ddpm"]()
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 1000, (128,), generator=g)
    x0, eps = torch.randn(128, 4, generator=g, dtype=torch.float64), torch.randn(128, 4, generator=g, dtype=torch.float64)
    t = process.time(idx).double()
    a, s = process.marginal(t)
    xt = process.perturb(x0, t, eps)
    v = from_eps(eps, xt, a, s, "v")  # divides by α (≈ 0.006 at t = 1): float64 keeps it exact
    assert_close(v, a[:, None] * eps - s[:, None] * x0, rtol=1e-10, atol=1e-10)
    assert_close(v, sched.get_velocity(x0, eps, idx), rtol=1e-4, atol=1e-5)  # diffusers: float32 ᾱ
    assert_close(to_eps(v, xt, a, s, "v"), eps, rtol=1e-10, atol=1e-10)
    assert_close(from_eps(to_eps(v, xt, a, s, "v"), xt, a, s, "x0"), x0, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", ["ve", "subvp"])
def test_v_of_a_non_vp_process_is_the_velocity_of_its_variance_preserving_rescaling(name):
    """v = (α ε − σ x₀)/r, r = √(α² + σ²): the VP velocity of x_t/r = (α/r) x₀ + (σ/r) ε (eq. 5)."""
    process = PROCESSES[name]()
    g = torch.Generator().manual_seed(4)
    t = process.t_min + (1 - process.t_min) * torch.rand(64, generator=g, dtype=torch.float64)
    x0, eps = torch.randn(64, 3, generator=g, dtype=torch.float64), torch.randn(64, 3, generator=g, dtype=torch.float64)
    a, s = process.marginal(t)
    r = (a**2 + s**2).sqrt()
    xt = process.perturb(x0, t, eps)
    ap, sp = (a / r)[:, None], (s / r)[:, None]
    assert_close(ap**2 + sp**2, torch.ones_like(ap), rtol=1e-14, atol=0)
    assert_close(xt / r[:, None], ap * x0 + sp * eps, rtol=1e-12, atol=1e-12)
    assert_close(from_eps(eps, xt, a, s, "v"), ap * eps - sp * x0, rtol=1e-10, atol=1e-10)


def test_edm_with_unit_data_std_is_v_prediction_with_the_sign_flipped():
    """eq. (4) with σ_d = 1 is eq. (5) with F = −v (diffusers' EDM v_prediction has c_out = −σσ_d/√(σ² + σ_d²))."""
    g = torch.Generator().manual_seed(5)
    a, s = torch.rand(32, generator=g, dtype=torch.float64) + 0.05, 3 * torch.rand(32, generator=g, dtype=torch.float64) + 1e-3
    x, f = torch.randn(32, 2, generator=g, dtype=torch.float64), torch.randn(32, 2, generator=g, dtype=torch.float64)
    assert_close(to_eps(f, x, a, s, "edm", 1.0), to_eps(-f, x, a, s, "v"), rtol=1e-12, atol=1e-12)


def test_edm_conversions_need_a_positive_data_std():
    x, a, s = torch.randn(4, 2), torch.ones(4), torch.ones(4)
    for bad in (None, 0.0):
        with pytest.raises(ValueError, match=r"prediction 'edm' needs data_std = σ_d > 0"):
            to_eps(x, x, a, s, "edm", bad)
    with pytest.raises(ValueError, match=r"data_std = 0\.0: must be > 0 .*for prediction edm"):
        ScoreModel(MLPNet(2, 8, 1, 4), VPSDE(), "edm", data_std=0.0)


@pytest.mark.parametrize("prediction", ["edm", "v"])
def test_an_edm_or_v_model_round_trips_through_its_checkpoint(tmp_path, prediction):
    torch.manual_seed(6)
    model = ScoreModel(MLPNet(3, 16, 1, 8), VESDE(0.01, 20.0, 1e-3), prediction, data_std=0.37)
    save_model(tmp_path / "m.safetensors", model)
    loaded, _ = load_model(tmp_path / "m.safetensors")
    assert (loaded.prediction, loaded.data_std) == (prediction, 0.37)
    x, t = torch.randn(8, 3), torch.rand(8) * 0.99 + 0.01
    assert torch.equal(loaded.x0(x, t), model.eval().x0(x, t))
    assert torch.equal(loaded.score(x, t), model.score(x, t))


# ------------------------------------------------------------------ σ̃ ↔ t and log-normal levels


@pytest.mark.parametrize("name", list(PROCESSES))
def test_sigma_tilde_is_increasing_and_its_inverse_round_trips(name):
    """t → σ̃(t) → t on [t_min, 1] (discrete processes: every level exactly), and clipping outside."""
    process = PROCESSES[name]()
    t = _levels(process)
    st = process.sigma_tilde(t)
    assert (st[1:] > st[:-1]).all()
    back = process.t_from_sigma_tilde(st)
    if name in CONTINUOUS:
        assert_close(back, t, rtol=0, atol=1e-10)
    else:
        assert torch.equal(back, t)
    ends = process.t_from_sigma_tilde(torch.tensor([st[0] * 1e-3, st[-1] * 1e3], dtype=torch.float64))
    assert_close(ends, torch.tensor([t[0], 1.0], dtype=torch.float64), rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", ["ddpm", "ddpm_cosine", "ncsn"])
def test_a_discrete_process_maps_sigma_to_its_nearest_level_in_log_sigma(name):
    process = PROCESSES[name]()
    levels = _levels(process)
    log_table = process.sigma_tilde(levels).log()
    g = torch.Generator().manual_seed(7)
    q = log_table[0] + (log_table[-1] - log_table[0]) * torch.rand(4000, generator=g, dtype=torch.float64)
    nearest = levels[(q[:, None] - log_table[None, :]).abs().argmin(1)]
    assert torch.equal(process.t_from_sigma_tilde(q.exp()), nearest)


def test_lognormal_levels_have_the_lognormal_sigma_on_an_unclipped_range():
    """ln σ̃(t) of the drawn t ~ N(P_mean, P_std²): VE with σ̃ ∈ [1e-6, 1e6] clips beyond 8.6 P_std only."""
    process = VESDE(1e-6, 1e6, 0.0)
    n, p_mean, p_std = 200_000, -1.2, 1.2
    t = lognormal_t(process, n, p_mean, p_std, generator=torch.Generator().manual_seed(8))
    assert t.shape == (n,) and t.dtype == torch.float32 and ((t > 0) & (t < 1)).all()
    log_sig = process.sigma_tilde(t.double()).log()
    assert abs(log_sig.mean().item() - p_mean) < 4 * p_std / n**0.5
    assert abs(log_sig.std().item() - p_std) < 4 * p_std / (2 * n) ** 0.5
    frac_below = (log_sig < p_mean).double().mean().item()  # the median
    assert abs(frac_below - 0.5) < 4 * 0.5 / n**0.5


def test_lognormal_levels_are_clipped_to_the_process_with_the_normal_tail_mass_at_each_end():
    """VP(0.1, 5): σ̃ ∈ [σ̃(t_min), σ̃(1)] = [0.0100, 3.44]; P(t = t_min) = Φ((ln σ̃(t_min) − P_mean)/P_std) and
    P(t = 1) = 1 − Φ((ln σ̃(1) − P_mean)/P_std), each within 4 binomial standard errors."""
    process = VPSDE(0.1, 5.0, 1e-3)
    n, p_mean, p_std = 200_000, -1.2, 1.2
    t = lognormal_t(process, n, p_mean, p_std, generator=torch.Generator().manual_seed(9))
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    ends = process.sigma_tilde(torch.tensor([process.t_min, 1.0], dtype=torch.float64)).log().tolist()
    for hit, p in ((t == torch.tensor(process.t_min), phi((ends[0] - p_mean) / p_std)),
                   (t == 1.0, 1 - phi((ends[1] - p_mean) / p_std))):
        assert p > 1e-3
        assert abs(hit.double().mean().item() - p) < 4 * (p * (1 - p) / n) ** 0.5
    assert ((t >= process.t_min) & (t <= 1.0)).all()


def test_uniform_level_sampling_is_the_process_own_draws():
    process = VPSDE()
    a = sample_levels(process, 100, ObjectiveParams(), generator=torch.Generator().manual_seed(0))
    b = process.sample_t(100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


# ------------------------------------------------------------------ weightings, eqs. (6)–(7)


@pytest.mark.parametrize("t_sampling", ["uniform", "lognormal"])
@pytest.mark.parametrize("name", ["ve", "vp", "ddpm"])
def test_edm_loss_is_the_dsm_loss_times_a_known_weight_on_the_same_draws(mixture, name, t_sampling):
    """λ(σ̃)‖D − x₀‖², λ = 1/c_out², computed from the model's x̂₀ = D, equals eps_loss with weighting edm and
    (2(σ̃² + σ_d²)/σ_d²) × the σ²-weighted DSM loss, per example, on the same t and ε."""
    process, sd = PROCESSES[name](), 2.3
    torch.manual_seed(10)
    model = ScoreModel(MLPNet(2, hidden=32, depth=1), process, "edm", data_std=sd)
    x0 = mixture.sample(512)[0].float()
    cfg = ObjectiveParams(weighting="edm", t_sampling=t_sampling)

    def draw(fn):
        torch.manual_seed(11)
        with torch.no_grad():
            return fn()

    edm_eps = draw(lambda: eps_loss(model, x0, cfg=cfg))
    edm_dsm = draw(lambda: dsm_loss(model, x0, cfg=cfg))
    plain_dsm = draw(lambda: dsm_loss(model, x0, cfg=dataclasses.replace(cfg, weighting="sigma2")))

    def direct():
        t = sample_levels(process, len(x0), cfg)
        xt = process.perturb(x0, t, torch.randn_like(x0))
        st = process.sigma_tilde(t)
        return st, (model.x0(xt, t) - x0).pow(2).sum(1) / edm_c_out(st, sd) ** 2

    st, edm = draw(direct)
    assert st.unique().numel() > 10  # many levels
    assert_close(edm_eps, edm, rtol=1e-4, atol=1e-6)
    assert_close(edm_dsm, edm / 2, rtol=1e-4, atol=1e-6)
    assert_close(edm, 2 * (st**2 + sd**2) / sd**2 * plain_dsm, rtol=1e-4, atol=1e-6)


def test_min_snr_weight_at_hand_computed_levels():
    """min(SNR, γ)/SNR with SNR = α²/σ²: VE (α = 1) at σ = 0.1, 1/√5, 1, 10 and VP at t = 0.05, 0.3, 0.9
    (SNR = 1/(e^B − 1), B = β_min t + ½ t²(β_max − β_min))."""
    ve = VESDE(0.01, 100.0, 0.0)
    sig = torch.tensor([0.1, 5**-0.5, 1.0, 10.0], dtype=torch.float64)
    t = (sig / 0.01).log() / math.log(100 / 0.01)
    assert_close(relative_weight(ve, t, "min_snr"), torch.tensor([0.05, 1.0, 1.0, 1.0], dtype=torch.float64))
    assert_close(relative_weight(ve, t, "min_snr", snr_gamma=1.0),
                 torch.tensor([0.01, 0.2, 1.0, 1.0], dtype=torch.float64))
    vp = VPSDE(0.1, 20.0, 1e-3)
    ts = [0.05, 0.3, 0.9]
    snr = [1 / math.expm1(0.1 * u + 0.5 * u**2 * 19.9) for u in ts]  # 32.98, 0.657, 2.9e-4
    for gamma, expect in ((5.0, [5.0 / snr[0], 1.0, 1.0]), (0.5, [0.5 / snr[0], 0.5 / snr[1], 1.0])):
        got = relative_weight(vp, torch.tensor(ts, dtype=torch.float64), "min_snr", snr_gamma=gamma)
        assert_close(got, torch.tensor(expect, dtype=torch.float64), rtol=1e-12, atol=0)


def test_min_snr_eps_loss_is_the_weighted_eps_loss_on_the_same_draws(mixture):
    process = VPSDE(0.1, 20.0, 1e-3)
    torch.manual_seed(12)
    model = ScoreModel(MLPNet(2, hidden=16, depth=1), process, "v", data_std=4.0)
    x0 = mixture.sample(256)[0].float()
    cfg = ObjectiveParams(weighting="min_snr", snr_gamma=2.0)
    torch.manual_seed(13)
    weighted = eps_loss(model, x0, cfg=cfg)
    torch.manual_seed(13)
    plain = eps_loss(model, x0, cfg=dataclasses.replace(cfg, weighting="sigma2"))
    torch.manual_seed(13)
    t = process.sample_t(256)
    w = (2.0 * process.sigma_tilde(t) ** 2).clamp(max=1.0)
    assert (w < 1).any() and (w == 1).any()
    assert_close(weighted, w * plain, rtol=1e-6, atol=0)


def test_the_edm_weighting_needs_the_models_data_std(mixture):
    process = VPSDE()
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    with pytest.raises(ConfigError, match=r"weighting = 'edm' needs the model's data_std = σ_d > 0"):
        dsm_loss(model, mixture.sample(8)[0], cfg=ObjectiveParams(weighting="edm"))


@pytest.mark.parametrize("loss", ["dsm", "eps", "ssm"])
@pytest.mark.parametrize("prediction", ["v", "edm"])
@pytest.mark.parametrize("objective", [dict(weighting="edm", t_sampling="lognormal"), dict(weighting="min_snr")])
def test_every_new_option_trains(mixture, loss, prediction, objective):
    model = ScoreModel(MLPNet(2, hidden=16, depth=1), PROCESSES["vp"](), prediction, data_std=4.0)
    value = build_loss(loss, ObjectiveParams(**objective), data_dim=2)(model, mixture.sample(32)[0], None)
    assert value.shape == (32,) and torch.isfinite(value).all()
    value.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ------------------------------------------------------------------ params


def test_the_new_params_are_validated_with_the_key_and_what_is_allowed():
    with pytest.raises(ConfigError, match=r"model\.prediction = 'vv': unknown value; allowed: eps, score, x0, v, edm"):
        parse_params({"model": {"prediction": "vv"}})
    with pytest.raises(ConfigError, match=r"objective\.weighting = 'snr': unknown value; allowed: sigma2, likelihood, "
                                          r"edm, min_snr"):
        parse_params({"objective": {"weighting": "snr"}})
    with pytest.raises(ConfigError, match=r"objective\.t_sampling = 'beta': unknown value; allowed: uniform, lognormal"):
        parse_params({"objective": {"t_sampling": "beta"}})
    with pytest.raises(ConfigError, match=r"objective\.snr_gamma = 0\.0: must be > 0"):
        parse_params({"objective": {"weighting": "min_snr", "snr_gamma": 0.0}})
    with pytest.raises(ConfigError, match=r"objective\.p_std = -1\.0: must be > 0"):
        parse_params({"objective": {"t_sampling": "lognormal", "p_std": -1.0}})
    p = parse_params({"model": {"prediction": "edm"}, "objective": {"weighting": "edm", "t_sampling": "lognormal"}})
    assert (p.model.prediction, p.objective.p_mean, p.objective.p_std, p.objective.snr_gamma) == ("edm", -1.2, 1.2, 5.0)
    assert set(PREDICTIONS) == {"eps", "score", "x0", "v", "edm"}
