"""Distillation (sbm.distill.students, and the consistency sampler of sbm.core.samplers) against exact answers:
the progressive target is exact, the consistency function's boundary condition holds bit for
bit, the consistency loss vanishes on the exact probability-flow map, a short round learns the
teacher's sampler, and the drivers resume."""

import dataclasses
import math

import pytest
import torch

from sbm.config.params import DistillParams, TrainParams
from sbm.core.gmm import GaussianMixture
from sbm.core.guidance import ClassifierFreeGuidance
from sbm.core.model import AnalyticScoreModel, Predicts, ScoreModel, from_eps, to_eps
from sbm.core.processes import VESDE, VPSDE, NCSNLadder, process_from_config
from sbm.core.samplers import consistency_sample, ddim_step, integrate
from sbm.distill import students as distill_mod
from sbm.distill.students import (
    ConsistencyDistillationLoss,
    ConsistencyModel,
    ProgressiveDistillationLoss,
    consistency_coefficients,
    consistency_distillation,
    ddim_solver,
    distillation_grid,
    distillation_weight,
    load_consistency_model,
    progressive_distillation,
    progressive_target,
    trainable_core,
)
from sbm.nets.score import MLPNet
from sbm.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

VE = VESDE(0.01, 20.0)
VP = VPSDE()
DDPM = process_from_config({"name": "ddpm", "beta_schedule": "linear", "beta_min": 0.1, "beta_max": 20.0,
                            "n_timesteps": 200})
LADDER = NCSNLadder(0.05, 20.0, 10)
PROCESSES = [VE, VP, DDPM]
IDS = ["ve", "vp", "ddpm"]


def _loop(**kw) -> TrainParams:
    base = dict(warmup_steps=20, log_every=50, checkpoint_every=10_000, grad_clip=1.0)
    return TrainParams(**{**base, **kw})


class FixedX0(Predicts):
    """A 'model' whose x̂₀ is a given tensor (a student that has learnt x̃ exactly)."""

    def __init__(self, x0, process):
        self.value, self.process = x0, process

    def predict(self, x, t, kind, cond=None):
        a, s = self.process.marginal(t.double())  # float64, as ddim_step's coefficients
        return from_eps(to_eps(self.value, x, a, s, "x0"), x, a, s, kind)


class GaussianFlow(Predicts):
    """Data N(μ, diag(v)) (v = 0: a point mass). Its exact score, and its exact PF-ODE map: in
    y = x/α, σ̃ = σ/α the ODE dy/dσ̃ = ε̂ = σ̃ (y − μ)/(v + σ̃²) (sbm.distill.students, eq. 1) keeps
    (y − μ)/√(v + σ̃²) constant per coordinate, so f(x, t) = α_min [μ + (x/α_t − μ) √(v + σ̃_min²)/√(v + σ̃_t²)]
    (x0 = f)."""

    def __init__(self, mu, var, process):
        self.mu, self.var, self.process = torch.as_tensor(mu).double(), torch.as_tensor(var).double(), process

    def _scaled(self, t):
        a, s = (v.double()[:, None] for v in self.process.marginal(t.double()))
        return a, s / a

    def flow(self, x, t, s):
        """The exact PF-ODE solution from (x, t) to time s; t, s (B,)."""
        (a_t, sig_t), (a_s, sig_s) = self._scaled(t), self._scaled(s)
        y = self.mu + (x.double() / a_t - self.mu) * ((self.var + sig_s**2) / (self.var + sig_t**2)).sqrt()
        return (a_s * y).to(x.dtype)

    def score(self, x, t, cond=None):
        a, s = (v.double()[:, None] for v in self.process.marginal(t.double()))
        return (-(x.double() - a * self.mu) / (a**2 * self.var + s**2)).to(x.dtype)

    def predict(self, x, t, kind, cond=None):
        a, s = self.process.marginal(t)
        if kind == "x0":
            return self.flow(x, t, torch.full_like(t, self.process.t_min))
        return from_eps(-s[:, None] * self.score(x, t), x, a, s, kind)

    def solver(self, teacher, x, t, s, cond=None):
        """A teacher 'ODE step' that is exact."""
        return self.flow(x, t, s)


# ------------------------------------------------------------------ progressive distillation: the target


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_progressive_target_is_exact(mixture, process):
    """One student DDIM step (samplers.ddim_step) from t with x̂₀ = x̃ lands on the exact
    teacher's two DDIM steps t → u → s, to float64 rounding; the loss's batched teacher
    computes that x̃ at every level, and at the denoise level x̃ is the teacher's Tweedie x̂₀."""
    teacher = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    grid = distillation_grid(process, 6, 6)  # the teacher's 6 steps; the student takes 3
    loss = ProgressiveDistillationLoss(teacher, grid)
    x = 4 * torch.randn(64, 2, dtype=torch.float64)
    for i in range(3):
        t, u, s = grid[2 * i], grid[2 * i + 1], grid[2 * i + 2]
        x_s = ddim_step(teacher, ddim_step(teacher, x, t, u), u, s)
        (a_t, s_t), (a_s, s_s) = (process.marginal(v.reshape(1).double()) for v in (t, s))
        target = progressive_target(x, x_s, (a_t, s_t), (a_s, s_s))
        student = ddim_step(FixedX0(target, process), x, t, s)
        assert torch.allclose(student, x_s, rtol=0, atol=1e-10), (student - x_s).abs().max()
        # the loss's batched teacher (per-example DDIM of sbm.distill.students) gives the same x̃
        batched = loss.teacher_target(x, torch.full((64,), i))
        assert torch.allclose(batched, target, rtol=1e-9, atol=1e-9), (batched - target).abs().max()
        # its DDIM step is the samplers' one
        assert torch.allclose(ddim_solver(teacher, x, t.expand(64), u.expand(64)), ddim_step(teacher, x, t, u),
                              rtol=0, atol=1e-10)
    # the denoise level: x̃ is the sampler's final denoise (float32 times: its ε→x̂₀ conversion rounds at 1e-7)
    denoised = teacher.x0(x, grid[-1].expand(64))
    assert torch.allclose(loss.teacher_target(x, torch.full((64,), 3)), denoised, rtol=1e-6, atol=1e-6)
    assert loss.n_levels == 4 and ProgressiveDistillationLoss(teacher, grid, denoise=False).n_levels == 3


@pytest.mark.parametrize("solver", ["ddim", "heun"])
def test_progressive_target_of_a_mixed_batch_is_each_rows_own(mixture, solver):
    """A batch mixing every level (the denoise included): each row's x̃ is the one of its own level
    alone, where the teacher's two steps are `solver`'s (Heun: eq. 2, two evaluations each) and one
    student DDIM step with x̂₀ = x̃ lands on them."""
    teacher = AnalyticScoreModel(mixture.exact_score_fn(VP), VP)
    grid = distillation_grid(VP, 6, 6)
    loss = ProgressiveDistillationLoss(teacher, grid, solver=solver)
    x = 3 * torch.randn(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    level = torch.arange(40) % 4
    got = loss.teacher_target(x, level)
    step = distill_mod.SOLVERS[solver]
    for i in range(4):
        rows = level == i
        if i == 3:
            want = teacher.x0(x[rows], grid[-1].expand(int(rows.sum())))
        else:
            n = int(rows.sum())
            t, u, s_ = (grid[k].expand(n) for k in (2 * i, 2 * i + 1, 2 * i + 2))
            x_s = step(teacher, step(teacher, x[rows], t, u), u, s_)
            (a_t, s_t), (a_s, s_s) = (VP.marginal(v.reshape(1).double()) for v in (t[0], s_[0]))
            want = progressive_target(x[rows], x_s, (a_t, s_t), (a_s, s_s))
            assert torch.allclose(ddim_step(FixedX0(want, VP), x[rows], t[0], s_[0]), x_s, rtol=0, atol=1e-9)
        assert torch.allclose(got[rows], want, rtol=1e-6, atol=1e-6), (i, (got[rows] - want).abs().max())
    if solver == "heun":  # Heun's two steps are not DDIM's
        assert not torch.allclose(got, ProgressiveDistillationLoss(teacher, grid).teacher_target(x, level), atol=1e-4)
    with pytest.raises(ValueError, match="solver = 'euler'"):
        ProgressiveDistillationLoss(teacher, grid, solver="euler")


class LabelShifted(Predicts):
    """A class-conditional 'model': the mixture's exact ε plus 0.1 × the label (label 3: none)."""

    def __init__(self, mixture, process):
        self.exact, self.process = AnalyticScoreModel(mixture.exact_score_fn(process), process), process

    def predict(self, x, t, kind, cond=None):
        a, s = self.process.marginal(t)
        return from_eps(self.exact.eps(x, t) + 0.1 * cond.to(x.dtype)[:, None], x, a, s, kind)


class Recorder(Predicts):
    """A student that records the condition it is called with."""

    def __init__(self, process):
        self.process, self.seen = process, []

    def predict(self, x, t, kind, cond=None):
        self.seen.append(cond)
        return torch.zeros_like(x)


def test_guided_teacher_and_condition_pass_through(mixture):
    """A classifier-free-guidance teacher (w = 2) with per-example labels: the loss's x̃ is that
    of the guided teacher's two samplers.ddim_step calls with the same labels (and differs from
    the unconditional one); the student gets the labels; the trainable model inside a guidance
    wrapper is found for the student's initialisation."""
    teacher = ClassifierFreeGuidance(LabelShifted(mixture, VP), 2.0, null_cond=3)
    grid = distillation_grid(VP, 4, 4)
    loss = ProgressiveDistillationLoss(teacher, grid)
    x = 3 * torch.randn(32, 2, dtype=torch.float64)
    labels = torch.randint(0, 3, (32,))
    level = torch.zeros(32, dtype=torch.long)
    x_s = ddim_step(teacher, ddim_step(teacher, x, grid[0], grid[1], cond=labels), grid[1], grid[2], cond=labels)
    want = progressive_target(x, x_s, *(VP.marginal(v.reshape(1).double()) for v in (grid[0], grid[2])))
    got = loss.teacher_target(x, level, labels)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(got, loss.teacher_target(x, level, None), atol=1e-3)
    student = Recorder(VP)
    loss(student, x, labels)
    assert student.seen == [labels]
    inner = ScoreModel(MLPNet(2, 8, 1, 4), VP)
    assert trainable_core(ClassifierFreeGuidance(inner, 2.0, null_cond=3)) is inner


def test_weightings_at_known_noise_levels():
    """λ = 1 + SNR and max(SNR, 1); VE σ(0) = 0.01 (SNR 10⁴), σ(1) = 20 (SNR 1/400), and VP at
    t = 0.5 from its closed form α = e^{−B/2}, σ² = 1 − e^{−B}, B = 0.1·0.5 + ½·0.25·19.9."""
    a, s = VE.marginal(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert distillation_weight(a, s, "snr_plus_one").tolist() == pytest.approx([10001.0, 1.0025])
    assert distillation_weight(a, s, "truncated_snr").tolist() == pytest.approx([10000.0, 1.0])
    b = 0.1 * 0.5 + 0.5 * 0.25 * 19.9
    snr = math.exp(-b) / (1 - math.exp(-b))
    a, s = VP.marginal(torch.tensor([0.5], dtype=torch.float64))
    assert distillation_weight(a, s, "snr_plus_one").item() == pytest.approx(1 + snr, rel=1e-12)
    assert distillation_weight(a, s, "truncated_snr").item() == pytest.approx(max(snr, 1.0), rel=1e-12)
    with pytest.raises(ValueError, match="weighting = 'snr'"):
        distillation_weight(a, s, "snr")


def test_settings_are_validated_naming_the_field():
    assert DistillParams(steps=2, teacher_steps=16).rounds == [8, 4, 2]
    for kw, field in [(dict(teacher_steps=48), "teacher_steps"), (dict(teacher_steps=4), "teacher_steps"),
                      (dict(weighting="snr"), "weighting"), (dict(method="dpm"), "method"),
                      (dict(steps=0), "steps"), (dict(target_decay=1.0), "target_decay"),
                      (dict(teacher_solver="rk4"), "teacher_solver"), (dict(lr=0.0), "lr"),
                      (dict(teacher="classifier"), "teacher"), (dict(lr_schedule="linear"), "lr_schedule")]:
        with pytest.raises(ValueError, match=rf"distill\.{field} = "):
            DistillParams(**kw)
    DistillParams(method="consistency", steps=4, teacher_steps=18)  # any N for consistency
    # the rounds' loop: the distillation's own steps, lr and schedule, the rest from train
    loop = distill_mod._loop_params(DistillParams(steps_per_round=300, lr=5e-4, lr_schedule="cosine"),
                                    TrainParams(lr_schedule="constant", lr_min_ratio=0.1, warmup_steps=7))
    assert (loop.steps, loop.lr, loop.lr_schedule, loop.lr_min_ratio, loop.warmup_steps) == (300, 5e-4, "cosine", 0.1, 7)
    with pytest.raises(ValueError, match="decrease strictly"):  # a 200-step DDPM has no 400-step grid
        ProgressiveDistillationLoss(AnalyticScoreModel(lambda x, t: x, DDPM), distillation_grid(DDPM, 400, 400))


# ------------------------------------------------------------------ progressive distillation: training and resume


def _teacher_and_student(mixture, process):
    x, _ = mixture.sample(4000, generator=torch.Generator().manual_seed(0))
    teacher = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    torch.manual_seed(0)
    student = ScoreModel(MLPNet(2, 64, 2, 32), process, prediction="x0", data_std=float(x.std()))
    return x, teacher, student


ROUND = DistillParams(steps=2, teacher_steps=4, steps_per_round=1500, lr=5e-3, batch_size=256, ema_decay=0.99)
# Two overlapping modes. (On the `mixture` fixture, whose modes lie ≈ 11 apart, the 4-step DDIM
# map is nearly discontinuous between the modes' basins, which this small MLP resolves slowly:
# 0.023–0.033 of the variance after 1200 steps, against 0.057 for the teacher's own 2 steps.)
NEAR = GaussianMixture([0.6, 0.4], [[-1.5, -1.0], [1.5, 1.0]], [[[0.5, 0.0], [0.0, 0.5]], [[0.6, 0.2], [0.2, 0.4]]])


@pytest.mark.slow
def _heun_sample(teacher, x_T, grid):
    """The teacher's Heun steps (eq. 2) over `grid`, then its denoise: what a round-1 Heun student copies."""
    x = x_T
    for t, s in zip(grid[:-1], grid[1:]):
        x = distill_mod.heun_solver(teacher, x, t.expand(len(x)), s.expand(len(x)))
    return teacher.x0(x, grid[-1].expand(len(x)))


@pytest.mark.parametrize("solver", ["ddim", "heun"])
def test_one_round_student_takes_the_teachers_two_steps_in_one(tmp_path, solver):
    """Exact teacher, 4 DDIM (or Heun: distill.teacher_solver, round 1) steps + denoise on VP; after
    one round (1500 steps, ≈ 6 s) the student's 2 DDIM steps + denoise from the same x_T land where
    the teacher's 4 do: mean squared distance < 2% (Heun: 3%) of the data's total variance (DDIM:
    measured 0.6–0.9% over 4 seeds) and < 0.2 × that of the teacher's own 2-step DDIM (10.6%). A second
    call with the same checkpoint directory reloads the round and trains nothing."""
    x, teacher, student = _teacher_and_student(NEAR, VP)
    cfg = dataclasses.replace(ROUND, teacher_solver=solver)
    out, (info,) = progressive_distillation(teacher, x, cfg, _loop(), seed=0, ckpt_dir=tmp_path, student=student,
                                            progress=False)
    assert (info.student_steps, info.teacher_steps, info.trained, info.resumed_from) == (2, 4, True, 0)
    grid = distillation_grid(VP, 4, 4)
    x_T = VP.prior_sample((2000, 2), generator=torch.Generator().manual_seed(5))
    ref = integrate(ddim_step, teacher, x_T, grid).x if solver == "ddim" else _heun_sample(teacher, x_T, grid)
    got = integrate(ddim_step, out, x_T, grid[::2])
    naive = integrate(ddim_step, teacher, x_T, grid[::2]).x
    variance = torch.cov(x.T).trace()
    err = (got.x - ref).pow(2).sum(1).mean() / variance
    err_naive = (naive - ref).pow(2).sum(1).mean() / variance
    assert got.nfe == 3  # 2 DDIM steps + the denoise
    # Heun's 4 steps lie farther from DDIM's 2 (87.6%) and are harder to copy: measured 2.2%
    assert err < (0.02 if solver == "ddim" else 0.03), (err, err_naive)
    assert err < 0.2 * err_naive, (err, err_naive)

    again, (info2,) = progressive_distillation(teacher, x, cfg, _loop(), seed=0, ckpt_dir=tmp_path,
                                               student=student, progress=False)
    # the loop resumed the finished round at its last step: no step trained, the same EMA weights
    assert (info2.trained, info2.resumed_from) == (False, ROUND.steps_per_round)
    assert info2.final_loss == info.final_loss and info2.seconds == pytest.approx(info.seconds, rel=0.1, abs=0.5)
    for a, b in zip(out.net.state_dict().values(), again.net.state_dict().values()):
        assert torch.equal(a, b)


def test_interrupted_multi_round_run_resumes_at_the_right_round(mixture, tmp_path, monkeypatch):
    """8 → 4 → 2 steps; the run 'dies' after round 2's training but before its file is saved:
    the rerun resumes both rounds from their last step checkpoints (no new steps) and writes
    round 2's file again."""
    x, teacher, student = _teacher_and_student(mixture, VP)
    cfg = DistillParams(steps=2, teacher_steps=8, steps_per_round=4, batch_size=64, lr=1e-3)
    first, infos = progressive_distillation(teacher, x, cfg, _loop(checkpoint_every=2), seed=1, ckpt_dir=tmp_path,
                                            student=student, progress=False)
    assert [(i.student_steps, i.trained) for i in infos] == [(4, True), (2, True)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round_0002", "round_0004"]
    (tmp_path / "round_0002" / "student.safetensors").unlink()

    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs["ckpt_dir"].name)
        return train(*args, **kwargs)

    monkeypatch.setattr(distill_mod, "train", counting)
    again, infos = progressive_distillation(teacher, x, cfg, _loop(checkpoint_every=2), seed=1, ckpt_dir=tmp_path,
                                            student=student, progress=False)
    assert calls == ["round_0004", "round_0002"]
    assert [(i.trained, i.resumed_from) for i in infos] == [(False, 4), (False, 4)]
    assert (tmp_path / "round_0002" / "student.safetensors").is_file()
    for a, b in zip(first.net.state_dict().values(), again.net.state_dict().values()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------ consistency models


@pytest.mark.parametrize("process", PROCESSES + [LADDER], ids=IDS + ["ncsn"])
def test_consistency_boundary_condition_is_exact(process):
    """f_θ(x, t_min) = x bit for bit for random weights, at the t_min of the sampler's grid and
    of the process; c_skip(t_min) = 1, c_out(t_min) = 0; elsewhere f_θ ≠ x."""
    torch.manual_seed(1)
    model = ConsistencyModel(ScoreModel(MLPNet(2, 32, 2, 16), process, data_std=0.7))
    x = 3 * torch.randn(50, 2)
    for t_min in (process.grid(7)[-1], torch.tensor(process.t_min)):
        t = t_min.expand(50)
        assert torch.equal(model.x0(x, t), x)
        c_skip, c_out = consistency_coefficients(process, t, 0.7)
        assert (c_skip == 1).all() and (c_out == 0).all()
    assert not torch.allclose(model.x0(x, torch.full((50,), 0.5)), x)


def test_consistency_coefficients_follow_the_paper():
    """Eq. (6) on σ̃ = σ/α: VE σ̃ = σ; VP σ̃ = √(e^B − 1) with B(t) in closed form."""
    t = torch.tensor([0.3, 1.0], dtype=torch.float64)
    sd = 0.5
    sig = 0.01 * 2000.0**t
    c_skip, c_out = consistency_coefficients(VE, t, sd)
    assert torch.allclose(c_skip, sd**2 / ((sig - 0.01) ** 2 + sd**2), rtol=1e-12)
    assert torch.allclose(c_out, (sig - 0.01) * sd / (sig**2 + sd**2).sqrt(), rtol=1e-12)
    b = lambda u: 0.1 * u + 0.5 * u**2 * 19.9  # noqa: E731
    sig = (torch.exp(b(t)) - 1).sqrt()
    sig_min = math.sqrt(math.exp(b(1e-3)) - 1)
    c_skip, c_out = consistency_coefficients(VP, t, sd)
    assert torch.allclose(c_skip, sd**2 / ((sig - sig_min) ** 2 + sd**2), rtol=1e-9)
    assert torch.allclose(c_out, (sig - sig_min) * sd / (sig**2 + sd**2).sqrt(), rtol=1e-9)


GAUSS_MU, GAUSS_VAR = [1.0, -2.0], [0.5, 2.0]


@pytest.mark.parametrize("k", [2, 3, 6])
def test_consistency_sampler_with_the_exact_flow_samples_the_data(k):
    """With the exact PF-ODE map as f, the multistep sampler returns exact samples of p_{t_min}
    = N(α_min μ, α_min² v + σ_min²) for any schedule (here VP, x_T ~ p_1 exactly); n = 20000:
    means within 5 s.e., variances within 6% (s.e. of a variance ≈ 1%). NFE = K − 1, + 1 with
    the (no-op) denoise."""
    flow = GaussianFlow(GAUSS_MU, GAUSS_VAR, VP)
    g = torch.Generator().manual_seed(k)
    n = 20000
    mu, var = torch.tensor(GAUSS_MU), torch.tensor(GAUSS_VAR)
    x0 = mu + var.sqrt() * torch.randn(n, 2, generator=g)
    x_T = VP.perturb(x0, torch.ones(n), torch.randn(n, 2, generator=g))
    out = consistency_sample(flow, x_T.double(), VP.grid(k), generator=torch.Generator().manual_seed(9))
    a, s = (v.item() for v in VP.marginal(torch.tensor([VP.t_min], dtype=torch.float64)))
    want_mean, want_var = a * mu, a**2 * var + s**2
    assert out.nfe == k - 1
    assert ((out.x.mean(0).float() - want_mean).abs() < 5 * (want_var / n).sqrt()).all(), out.x.mean(0)
    assert ((out.x.var(0).float() / want_var - 1).abs() < 0.06).all(), out.x.var(0)
    again = consistency_sample(flow, x_T.double(), VP.grid(k), denoise=True, generator=torch.Generator().manual_seed(9))
    assert again.nfe == k
    assert torch.allclose(again.x, out.x, atol=1e-9)


@pytest.mark.parametrize("solver", ["ddim", "heun"])
@pytest.mark.parametrize("process", [VE, VP], ids=["ve", "vp"])
def test_consistency_loss_vanishes_on_the_exact_flow(process, solver):
    """Point-mass data: every PF-ODE trajectory is straight in (y, σ̃), so the DDIM and Heun
    teacher steps are exact, and with f = the exact map (student and target) eq. (7) is 0 at
    every level, to float64 rounding. A Gaussian with spread: DDIM/Heun are no longer exact
    (loss > 0), an exact teacher step gives 0 again. (float64 grid: the analytic teacher's
    ε = −σ·score then carries no float32 rounding.)"""
    grid = process.grid(9).double()
    point = GaussianFlow(GAUSS_MU, [0.0, 0.0], process)
    loss = ConsistencyDistillationLoss(AnalyticScoreModel(point.score, process), point, grid, solver=solver)
    x0 = torch.tensor(GAUSS_MU, dtype=torch.float64).expand(256, 2)
    assert loss(point, x0).abs().max() < 1e-20

    spread = GaussianFlow(GAUSS_MU, GAUSS_VAR, process)
    teacher = AnalyticScoreModel(spread.score, process)
    x0 = x0 + torch.randn(256, 2, dtype=torch.float64) * torch.tensor(GAUSS_VAR, dtype=torch.float64).sqrt()
    assert ConsistencyDistillationLoss(teacher, spread, grid, solver=solver)(spread, x0).mean() > 1e-8
    exact = ConsistencyDistillationLoss(teacher, spread, grid, solver=spread.solver)
    assert exact(spread, x0).abs().max() < 1e-20


def _consistency_student(process, seed=0):
    torch.manual_seed(seed)
    return ConsistencyModel(ScoreModel(MLPNet(2, 32, 1, 16), process, data_std=3.0))


def test_target_network_update_and_resume_are_exact(mixture, tmp_path):
    """θ⁻ ← μ θ⁻ + (1 − μ) θ; a run stopped after 3 steps and resumed to 6 ends with the same
    student and the same θ⁻ as an uninterrupted 6-step run (θ⁻ is in the checkpoints)."""
    x, _ = mixture.sample(512, generator=torch.Generator().manual_seed(0))
    teacher = AnalyticScoreModel(mixture.exact_score_fn(VP), VP)
    loss = ConsistencyDistillationLoss(teacher, _consistency_student(VP), VP.grid(11), solver="ddim",
                                       target_decay=0.9)
    live = _consistency_student(VP, seed=1).net
    before = {k: v.clone() for k, v in loss.target.net.state_dict().items()}
    loss.update_target(live)
    for k, v in loss.target.net.state_dict().items():
        assert torch.allclose(v, 0.9 * before[k] + 0.1 * live.state_dict()[k], atol=1e-7), k

    def run(steps, ckpt):
        student = _consistency_student(VP)
        loss = ConsistencyDistillationLoss(teacher, student, VP.grid(11), solver="ddim", target_decay=0.9)
        model, result = train(student, loss, x, _loop(steps=steps, batch_size=64, lr=1e-3, checkpoint_every=3),
                              seed=2, ckpt_dir=ckpt, progress=False, extra_state={"target": loss.target.net},
                              after_step=loss.update_target)
        return model, loss.target.net, result

    full, full_target, _ = run(6, tmp_path / "a")
    run(3, tmp_path / "b")
    resumed, resumed_target, result = run(6, tmp_path / "b")
    assert result.resumed_from == 3
    for a, b in zip([*full.net.state_dict().values(), *full_target.state_dict().values()],
                    [*resumed.net.state_dict().values(), *resumed_target.state_dict().values()]):
        assert torch.equal(a, b)
    start = _consistency_student(VP).net.state_dict()
    assert not all(torch.equal(v, start[k]) for k, v in full_target.state_dict().items())  # θ⁻ moved


def test_consistency_driver_saves_and_reloads(mixture, tmp_path):
    x, _ = mixture.sample(512, generator=torch.Generator().manual_seed(0))
    teacher = AnalyticScoreModel(mixture.exact_score_fn(VE), VE)
    cfg = DistillParams(method="consistency", steps=2, teacher_steps=10, steps_per_round=5, batch_size=64,
                        teacher_solver="heun")
    model, (info,) = consistency_distillation(teacher, x, cfg, _loop(), seed=0, ckpt_dir=tmp_path,
                                              student=_consistency_student(VE), progress=False)
    assert isinstance(model, ConsistencyModel) and info.trained and (info.student_steps, info.teacher_steps) == (2, 10)
    loaded, meta = load_consistency_model(info.path)
    probe = torch.randn(20, 2)
    t = torch.full((20,), 0.4)
    assert torch.allclose(loaded.x0(probe, t), model.x0(probe, t), atol=1e-6)
    again, (info2,) = consistency_distillation(teacher, x, cfg, _loop(), seed=0, ckpt_dir=tmp_path,
                                               student=_consistency_student(VE), progress=False)
    assert (info2.trained, info2.resumed_from) == (False, cfg.steps_per_round)  # resumed at the end: no step
    assert torch.allclose(again.x0(probe, t), model.x0(probe, t), atol=1e-6)
    out = consistency_sample(again, VE.prior_sample((30, 2)), VE.grid(cfg.steps + 1))
    assert out.nfe == 2 and torch.isfinite(out.x).all()


# ------------------------------------------------------------------ a text teacher with its guidance folded in


@pytest.mark.slow
def test_a_text_student_folds_the_guidance_in(tmp_path):
    """A small text model on two far-apart classes (scratch encoder, 600 steps) is the teacher
    under CFG w = 3; progressive distillation 8 → 4 → 2 steps, with captions drawn from the labels
    (`caption_loss` as wrap_loss, 10% empty prompts). The student reads the prompt alone (one
    evaluation per step, no guidance wrapper): from the same x_T its 2 DDIM steps + denoise land
    where the guided teacher's 8 do (mean squared distance < 2% of the data's variance, and
    < 0.05 × that of the guided teacher's own 2 steps), and ≥ 95% of its
    samples for "the digit 1" / "the digit 0" fall in that class's half. It is a text model:
    its file reloads with equal outputs for a prompt, and the rounds' seconds survive reloading."""
    from sbm.core.losses import dsm_loss
    from sbm.models.score import save_model
    from sbm.text.conditioning import caption_loss, cfg, prompt_ids
    from sbm.text.encoders import build_text_encoder
    from sbm.text.net import TextConditionalNet, load_text_model

    templates = ["a handwritten {name}", "the digit {digit}"]
    mix = GaussianMixture([0.5, 0.5], [[-3.0, 0.0], [3.0, 0.0]], [[[0.25, 0.0], [0.0, 0.25]]] * 2)
    x, y = mix.sample(4000, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    encoder = build_text_encoder("scratch", max_length=8, scratch_dim=16, scratch_layers=1, scratch_heads=2,
                                 vocab_source=templates)
    process = VESDE(0.01, 8.0)
    model = ScoreModel(TextConditionalNet(MLPNet(2, 64, 2, 16).config, encoder), process, "eps", 3.0)
    text_model, _ = train(model, caption_loss(dsm_loss, encoder, templates, 0.1), x,
                          _loop(steps=600, batch_size=256, lr=3e-3, checkpoint_every=600), seed=0,
                          ckpt_dir=tmp_path / "text", cond=y, progress=False)
    teacher = cfg(text_model, 3.0)
    dcfg = DistillParams(steps=2, teacher_steps=8, steps_per_round=800, lr=2e-3, batch_size=256, ema_decay=0.99,
                         teacher_solver="ddim")  # round 1 copies the teacher's DDIM steps, the reference below
    wrap = lambda loss: caption_loss(loss, encoder, templates, 0.1)  # noqa: E731
    student, infos = progressive_distillation(teacher, x, dcfg, _loop(), seed=0, ckpt_dir=tmp_path / "d", cond=y,
                                              wrap_loss=wrap, progress=False)
    assert [i.student_steps for i in infos] == [4, 2] and isinstance(student.net, TextConditionalNet)

    n = 400
    ids = prompt_ids(text_model, ["the digit 0"] * n + ["the digit 1"] * n)
    x_T = process.prior_sample((2 * n, 2), generator=torch.Generator().manual_seed(3))
    grid = distillation_grid(process, 8, 8)
    with torch.no_grad():
        ref = integrate(ddim_step, teacher, x_T, grid, cond=ids).x
        naive = integrate(ddim_step, teacher, x_T, grid[::4], cond=ids).x
        got = integrate(ddim_step, student, x_T, grid[::4], cond=ids)
    err, err_naive = ((v - ref).pow(2).sum(1).mean().item() for v in (got.x, naive))
    assert got.nfe == 3  # 2 steps + the denoise, one network evaluation each
    variance = torch.cov(x.T).trace().item()  # ≈ 9.25
    assert err < 0.02 * variance and err < 0.05 * err_naive, (err, err_naive)  # measured 0.023 vs 51
    assert (got.x[:n, 0] < 0).double().mean() >= 0.95 and (got.x[n:, 0] > 0).double().mean() >= 0.95

    save_model(tmp_path / "student.safetensors", student)
    loaded, _ = load_text_model(tmp_path / "student.safetensors")
    t = torch.full((8,), 0.3)
    with torch.no_grad():
        assert torch.allclose(loaded.eps(x_T[:8], t, ids[:8]), student.eps(x_T[:8], t, ids[:8]), atol=1e-5)
    _, again = progressive_distillation(teacher, x, dcfg, _loop(), seed=0, ckpt_dir=tmp_path / "d", cond=y,
                                        wrap_loss=wrap, progress=False)
    assert [i.trained for i in again] == [False, False]
    assert [i.seconds for i in again] == pytest.approx([i.seconds for i in infos], rel=0.05) and all(i.seconds > 0 for i in again)


def test_teachers_own_their_rules(tmp_path):
    """load_teacher: a score teacher is its own model, unconditional (no captions, no prompts);
    a text teacher is the text model under CFG of params text.weight, conditions the student on
    captions of the labels, refuses data without labels, and is compared on n prompts per digit
    whose ids are the encoder's ids of the filled templates. The guidance settings enter the
    rounds' fingerprint, so changing w retrains."""
    import dataclasses

    from sbm.config.params import TextParams
    from sbm.distill.students import Teacher, TextTeacher, load_teacher
    from sbm.models.score import save_model
    from sbm.text.captions import fill_template
    from sbm.text.encoders import build_text_encoder
    from sbm.text.net import TextConditionalNet

    templates = ["a handwritten {name}", "the digit {digit}"]
    encoder = build_text_encoder("scratch", max_length=8, scratch_dim=16, scratch_layers=1, scratch_heads=2,
                                 vocab_source=templates)
    text_model = ScoreModel(TextConditionalNet(MLPNet(2, 16, 1, 8).config, encoder), VESDE(0.01, 8.0))
    score_model = ScoreModel(MLPNet(2, 16, 1, 8), VESDE(0.01, 8.0))
    save_model(tmp_path / "text.safetensors", text_model)
    save_model(tmp_path / "score.safetensors", score_model)
    params = TextParams(templates=templates, weight=3.0, p_uncond=0.2)

    plain = load_teacher("score", tmp_path / "score.safetensors", tmp_path / "text.safetensors", params)
    assert type(plain) is Teacher and plain.model is plain.base and plain.guidance is None
    assert plain.conditioning(None, "data") == (None, None) and plain.evaluation_prompts(10, 3) is None

    guided = load_teacher("text", tmp_path / "score.safetensors", tmp_path / "text.safetensors", params)
    assert isinstance(guided, TextTeacher) and isinstance(guided.model, ClassifierFreeGuidance)
    assert guided.model.weight == 3.0 and guided.model.model is guided.base and guided.guidance == 3.0
    labels = torch.tensor([1, 0, 7])
    cond, wrap = guided.conditioning(labels, "data")
    assert cond is labels and callable(wrap)
    with pytest.raises(ValueError, match="data: the data has no class labels"):
        guided.conditioning(None, "data")
    y, ids = guided.evaluation_prompts(10, 3)
    assert y.tolist() == [d for d in range(10) for _ in range(3)]
    allowed = {d: {tuple(r) for r in encoder.token_ids([fill_template(t, d) for t in templates]).tolist()}
               for d in range(10)}
    assert all(tuple(row) in allowed[int(d)] for d, row in zip(y, ids.tolist()))
    other = dataclasses.replace(guided, guidance=2.0)
    assert other.fingerprint() != guided.fingerprint() and plain.fingerprint() != guided.fingerprint()
    with pytest.raises(ValueError, match="distill.teacher = 'clip': allowed score, text"):
        load_teacher("clip", tmp_path / "score.safetensors", tmp_path / "text.safetensors", params)
