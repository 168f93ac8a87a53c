"""Guidance wrappers and the noise-conditional classifier, checked against exact answers.

A Gaussian mixture has an exact noisy classifier, p_t(y = k | x) ∝ w_k N(x; α μ_k, α² Σ_k + σ² I),
so classifier guidance at s = 1 must give the exact score of component k (Bayes), and any
sampler driven by it must land in component k."""

import math

import pytest
import torch
from torch import nn

from sbm.config.params import SAMPLERS, SamplerParams, TrainParams
from sbm.core.gmm import GaussianMixture
from sbm.core.guidance import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    drop_condition,
    null_batch,
    with_condition_dropout,
)
from sbm.core.model import AnalyticScoreModel
from sbm.core.processes import VESDE, VPSDE
from sbm.core.samplers import build_sampler, schedule_for
from sbm.errors import CheckpointError
from sbm.models.classifier import (
    NoisyClassifier,
    accuracy_by_noise_quarter,
    classifier_from_config,
    classifier_loss,
    load_classifier,
    noise_quarters,
    save_classifier,
)
from sbm.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

VP = VPSDE(0.1, 20.0, 1e-3)
VE = VESDE(0.05, 15.0, 1e-3)


class MixtureClassifier(nn.Module):
    """The exact p_t(y | x) of a mixture under `process`, with the classifier API:
    logits_k = log w_k + log N(x; α μ_k, α² Σ_k + σ² I) (torch.distributions, float64)."""

    def __init__(self, gmm: GaussianMixture, process):
        super().__init__()
        self.gmm, self.process = gmm, process

    def forward(self, x, t):
        a, s = self.process.marginal(torch.as_tensor(t).double().reshape(-1).expand(x.shape[0]))
        eye = torch.eye(self.gmm.dim, dtype=torch.float64)
        cov = a[:, None, None, None] ** 2 * self.gmm.covs + s[:, None, None, None] ** 2 * eye  # (N, K, D, D)
        loc = a[:, None, None] * self.gmm.means  # (N, K, D)
        logn = torch.distributions.MultivariateNormal(loc, covariance_matrix=cov).log_prob(x.double()[:, None, :])
        return (self.gmm.weights.log() + logn).to(x.dtype)

    def log_prob(self, x, t, y):
        return torch.log_softmax(self(x, t), -1).gather(1, y.reshape(-1, 1)).squeeze(1)


def _component(gmm: GaussianMixture, k: int) -> GaussianMixture:
    return GaussianMixture([1.0], gmm.means[k : k + 1].tolist(), gmm.covs[k : k + 1].tolist())


def _closed_form_grad(gmm, x, a, s, k):
    """∇ log p_t(y=k | x) = −C_k⁻¹(x − α μ_k) − ∇ log p_t(x), with C_k = α² Σ_k + σ² I."""
    cov = a[:, None, None] ** 2 * gmm.covs[k] + s[:, None, None] ** 2 * torch.eye(gmm.dim, dtype=torch.float64)
    own = -torch.linalg.solve(cov, (x - a[:, None] * gmm.means[k]).unsqueeze(-1)).squeeze(-1)
    return own - gmm.score(x, a, s)


# ---------------------------------------------------------------- classifier guidance, exact


@pytest.mark.parametrize("process", [VP, VE], ids=["vp", "ve"])
def test_classifier_guidance_adds_exactly_s_times_the_classifier_gradient(mixture, process):
    model = AnalyticScoreModel(mixture.exact_score_fn(process), process)
    clf = MixtureClassifier(mixture, process)
    g = torch.Generator().manual_seed(0)
    x = 6 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    for tv in (0.02, 0.3, 0.7, 1.0):
        t = torch.full((64,), tv, dtype=torch.float64)
        a, s = process.marginal(t)
        base = mixture.score(x, a, s)
        grad = torch.stack([_closed_form_grad(mixture, x[i : i + 1], a[i : i + 1], s[i : i + 1], int(y[i]))[0]
                            for i in range(64)])
        for scale in (0.0, 0.5, 1.0, 3.0):
            guided = ClassifierGuidance(model, clf, scale)
            with torch.no_grad():  # as inside the samplers: the wrapper must re-enable autograd
                got = guided.score(x, t, y)
                eps, x0 = guided.eps(x, t, y), guided.predict(x, t, "x0", y)
            want = base + scale * grad
            assert torch.allclose(got, want, atol=1e-8, rtol=1e-6), (tv, scale)
            assert torch.allclose(eps, -s[:, None] * want, atol=1e-8, rtol=1e-6)
            assert torch.allclose(x0, (x + s[:, None] ** 2 * want) / a[:, None], atol=1e-6, rtol=1e-6)
            assert torch.allclose(guided.x0(x, t, y), x0)


def test_guidance_at_scale_one_is_the_exact_component_score(mixture):
    """Bayes: ∇ log p_t(x) + ∇ log p_t(y=k | x) = ∇ log p_t(x | y=k), at every level."""
    model = AnalyticScoreModel(mixture.exact_score_fn(VP), VP)
    guided = ClassifierGuidance(model, MixtureClassifier(mixture, VP), 1.0)
    x = 3 * torch.randn(200, 2, dtype=torch.float64)
    for k in range(3):
        for tv in (VP.t_min, 0.1, 0.5, 1.0):
            t = torch.full((200,), tv, dtype=torch.float64)
            a, s = VP.marginal(t)
            want = _component(mixture, k).score(x, a, s)
            assert torch.allclose(guided.score(x, t, k), want, atol=1e-5, rtol=1e-5), (k, tv)
            assert torch.allclose(guided.score(x, t, torch.full((200,), k)), want, atol=1e-5, rtol=1e-5)


def test_classifier_guidance_needs_the_class_and_can_pass_it_to_a_conditional_model(mixture):
    model = AnalyticScoreModel(mixture.exact_score_fn(VP), VP)
    guided = ClassifierGuidance(model, MixtureClassifier(mixture, VP), 1.0)
    with pytest.raises(ValueError, match="cond = y"):
        guided.score(torch.zeros(3, 2), torch.full((3,), 0.5))

    seen = []

    class Spy(AnalyticScoreModel):
        def score(self, x, t, cond=None):
            seen.append(cond)
            return super().score(x, t, cond)

    spy = Spy(mixture.exact_score_fn(VP), VP)
    y = torch.tensor([0, 1, 2])
    ClassifierGuidance(spy, MixtureClassifier(mixture, VP), 2.0).score(torch.zeros(3, 2), torch.full((3,), 0.5), y)
    ClassifierGuidance(spy, MixtureClassifier(mixture, VP), 2.0, conditional_model=True).score(
        torch.zeros(3, 2), torch.full((3,), 0.5), y)
    assert seen[0] is None and torch.equal(seen[1], y)


@pytest.mark.parametrize("name", ["ddim", "euler_maruyama"])
def test_samplers_driven_by_guidance_land_in_the_requested_component(mixture, name):
    """No sampler change: cond = y flows through the sampler into the wrapper."""
    model = AnalyticScoreModel(mixture.exact_score_fn(VP), VP)
    guided = ClassifierGuidance(model, MixtureClassifier(mixture, VP), 1.0)
    cfg = SamplerParams(name=name, steps=100)
    sampler = build_sampler(cfg)
    g = torch.Generator().manual_seed(1)
    n = 400
    for k in (2, 1):  # 2: the lightest component (weight 0.1)
        out = sampler(guided, VP.prior_sample((n, 2), generator=g), schedule_for(cfg, VP),
                      cond=torch.full((n,), k), generator=g)
        frac = float((mixture.nearest_component(out.x) == k).double().mean())
        assert frac >= 0.97, (name, k, frac)
    # unguided, the same sampler mostly lands elsewhere
    out = sampler(model, VP.prior_sample((n, 2), generator=g), schedule_for(cfg, VP), generator=g)
    assert float((mixture.nearest_component(out.x) == 2).double().mean()) < 0.25


class ConditionalMixtureModel(nn.Module):
    """A conditional model with the exact answers: cond = labels (N,), −1 = null -> the
    mixture's score, k -> component k's score."""

    def __init__(self, gmm, process):
        super().__init__()
        self.gmm, self.process = gmm, process
        self.parts = [_component(gmm, k) for k in range(gmm.n_components)]
        self.calls = 0

    def score(self, x, t, cond=None):
        self.calls += 1
        a, s = self.process.marginal(t)
        out = self.gmm.score(x, a, s)
        for k, part in enumerate(self.parts):
            m = cond == k
            if m.any():
                out[m] = part.score(x[m], a[m], s[m])
        return out

    def eps(self, x, t, cond=None):
        return -self.process.sigma(t)[:, None] * self.score(x, t, cond)

    def x0(self, x, t, cond=None):
        a, s = self.process.marginal(t)
        return (x - s[:, None] * self.eps(x, t, cond)) / a[:, None]


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_runs_both_wrappers_unchanged(mixture, name):
    """With s = 1 (classifier) or w = 1 (CFG) both wrappers are the exact component-k model,
    so every sampler, fed the same noise, must give that model's samples."""
    k = 2
    # annealed Langevin's step grows as σᵢ²/σ_L² (~10⁴ over VP's range): a smaller ε keeps it stable
    cfg = SamplerParams(name=name, steps=6, steps_per_level=2, langevin_steps=4, rtol=1e-3, atol=1e-3,
                        step_size=1e-5 if name == "annealed_langevin" else 1e-3)
    sampler = build_sampler(cfg)
    schedule = schedule_for(cfg, VP).double()
    x_T = VP.prior_sample((50, 2), generator=torch.Generator().manual_seed(0)).double()
    y = torch.full((50,), k)
    reference = AnalyticScoreModel(_component(mixture, k).exact_score_fn(VP), VP)
    want = sampler(reference, x_T, schedule, generator=torch.Generator().manual_seed(1))
    analytic = AnalyticScoreModel(mixture.exact_score_fn(VP), VP)
    wrappers = [ClassifierGuidance(analytic, MixtureClassifier(mixture, VP), 1.0),
                ClassifierFreeGuidance(ConditionalMixtureModel(mixture, VP), 1.0, -1),
                ClassifierFreeGuidance(ConditionalMixtureModel(mixture, VP), 1.0 + 1e-12, torch.tensor(-1))]
    for wrapper in wrappers:
        got = sampler(wrapper, x_T, schedule, cond=y, generator=torch.Generator().manual_seed(1))
        assert got.nfe == want.nfe
        assert torch.allclose(got.x, want.x, atol=1e-5, rtol=1e-5), (name, type(wrapper).__name__)


# ---------------------------------------------------------------- classifier-free guidance, exact


class FakeConditional:
    """eps(x, t, c) = x · m(c) + t with m(c) = the sum of each example's condition, so the
    null condition (zeros) gives ε_u = t and any c a known ε_c; counts its calls."""

    def __init__(self):
        self.process = VP
        self.calls = 0

    def eps(self, x, t, cond):
        self.calls += 1
        return x * cond.reshape(len(cond), -1).sum(1, keepdim=True) + t[:, None]


@pytest.mark.parametrize("cond_shape", [(), (3, 4)], ids=["labels", "embeddings"])
def test_cfg_returns_eps_u_plus_w_times_the_difference(cond_shape):
    g = torch.Generator().manual_seed(0)
    n = 16
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.05
    cond = torch.randn((n, *cond_shape), generator=g, dtype=torch.float64) + 2
    eps_u = t[:, None].expand(n, 2)
    eps_c = x * cond.reshape(n, -1).sum(1, keepdim=True) + t[:, None]
    a, s = VP.marginal(t)
    nulls = [torch.zeros(cond_shape), torch.zeros((1, *cond_shape)), torch.zeros((n, *cond_shape)),
             lambda m: torch.zeros((m, *cond_shape))]
    for null in nulls:
        for w in (-0.5, 0.3, 2.0, 7.5):
            for batched in (True, False):
                fake = FakeConditional()
                cfg = ClassifierFreeGuidance(fake, w, null, batched=batched)
                want = eps_u + w * (eps_c - eps_u)
                assert torch.allclose(cfg.eps(x, t, cond), want, atol=1e-12, rtol=1e-12)
                assert fake.calls == (1 if batched else 2)
                assert torch.allclose(cfg.score(x, t, cond), -want / s[:, None], rtol=1e-12)
                # eq. (4): the same rule on scores
                s_u, s_c = -eps_u / s[:, None], -eps_c / s[:, None]
                assert torch.allclose(cfg.score(x, t, cond), s_u + w * (s_c - s_u), rtol=1e-10)
                assert torch.allclose(cfg.x0(x, t, cond), (x - s[:, None] * want) / a[:, None], rtol=1e-12)
        # the limits: w = 1 is the conditional model, w = 0 (or no condition) the unconditional one
        fake = FakeConditional()
        assert torch.equal(ClassifierFreeGuidance(fake, 1.0, null).eps(x, t, cond), eps_c)
        assert torch.equal(ClassifierFreeGuidance(fake, 0.0, null).eps(x, t, cond), eps_u)
        assert torch.equal(ClassifierFreeGuidance(fake, 3.0, null).eps(x, t, None), eps_u)
        assert fake.calls == 3


def test_null_batch_rejects_a_misshapen_null_condition():
    with pytest.raises(ValueError, match="does not fit"):
        null_batch(torch.zeros(5), 4, like=torch.zeros(4, 3))
    assert null_batch(7, 3).tolist() == [7, 7, 7]


# ---------------------------------------------------------------- condition dropout


@pytest.mark.parametrize("kind", ["labels", "embeddings"])
def test_drop_condition_drops_the_right_fraction_to_exactly_the_null(kind):
    n, p = 20000, 0.3
    g = torch.Generator().manual_seed(0)
    if kind == "labels":
        cond, null = torch.randint(0, 10, (n,), generator=g), torch.tensor(10)
    else:
        cond, null = torch.randn(n, 3, 4, generator=g) + 5, torch.zeros(3, 4)
    out, mask = drop_condition(cond, null, p, torch.Generator().manual_seed(1))
    assert out.shape == cond.shape and out.dtype == cond.dtype and mask.shape == (n,) and mask.dtype == torch.bool
    assert abs(mask.double().mean().item() - p) < 3 * math.sqrt(p * (1 - p) / n)
    assert (out[mask] == null).all() and torch.equal(out[~mask], cond[~mask])
    assert not (cond[mask] == null).all()  # the dropped rows really changed
    again, mask2 = drop_condition(cond, null, p, torch.Generator().manual_seed(1))
    assert torch.equal(again, out) and torch.equal(mask, mask2)  # deterministic given the generator
    keep, m0 = drop_condition(cond, null, 0.0, g)
    assert torch.equal(keep, cond) and not m0.any()
    gone, m1 = drop_condition(cond, null, 1.0, g)
    assert (gone == null).all() and m1.all()
    with pytest.raises(ValueError, match="p_uncond"):
        drop_condition(cond, null, 1.5)


def test_condition_dropout_loss_passes_the_dropped_conditions():
    seen = []
    loss = with_condition_dropout(lambda model, x, c: seen.append(c) or x.sum(1), torch.tensor(-1), 1.0)
    loss(None, torch.ones(4, 2), torch.arange(4))
    assert seen[0].tolist() == [-1] * 4


# ---------------------------------------------------------------- the noise-conditional classifier


@pytest.mark.parametrize("shape", [(2,), (1, 8, 8), (4, 2, 2)])
def test_noisy_classifier_shapes_and_checkpoint_round_trip(shape, tmp_path):
    clf = NoisyClassifier(shape, 5, VP, channels=(8, 16), hidden=32, embedding_dim=16, data_std=0.5)
    x, t = torch.randn(6, *shape), torch.rand(6)
    y = torch.randint(0, 5, (6,))
    logits = clf(x, t)
    assert logits.shape == (6, 5)
    lp = clf.log_prob(x, t, y)
    assert lp.shape == (6,) and torch.allclose(lp, torch.log_softmax(logits, -1)[torch.arange(6), y])
    assert clf(x, 0.5).shape == (6, 5)  # a scalar time is repeated over the batch
    assert classifier_loss(clf, x, y).shape == (6,)
    save_classifier(tmp_path / "clf.safetensors", clf, {"note": "x"})
    back, meta = load_classifier(tmp_path / "clf.safetensors")
    assert meta["note"] == "x" and back.config == clf.config
    assert torch.equal(back(x, t), clf.eval()(x, t))
    assert classifier_from_config(clf.config).config == clf.config


@pytest.mark.parametrize("shape,process", [((2,), VP), ((2,), VE), ((1, 8, 8), VP)], ids=["vec-vp", "vec-ve", "img-vp"])
def test_classifier_loss_is_cross_entropy_at_the_noised_input(shape, process):
    """Eq. (1) exactly, per example: with the global generator re-seeded, t ~ process.sample_t and
    ε ~ N(0, I) are drawn again as the loss draws them, x_t = α(t) x₀ + σ(t) ε is built from the
    marginal, and −log softmax(logits(x_t, t))_y is the loss. A loss that ignored the label, the
    noise, or used one t for the batch fails."""
    clf = NoisyClassifier(shape, 5, process, channels=(8, 16), hidden=32, embedding_dim=16, data_std=0.5)
    g = torch.Generator().manual_seed(4)
    x0, y = torch.randn(64, *shape, generator=g), torch.randint(0, 5, (64,), generator=g)
    with torch.no_grad():
        torch.manual_seed(21)
        loss = classifier_loss(clf, x0, y)
        torch.manual_seed(21)
        t = process.sample_t(64)
        eps = torch.randn_like(x0)
        a, s = process.marginal(t)
        view = (-1,) + (1,) * len(shape)
        xt = a.reshape(view) * x0 + s.reshape(view) * eps
        logp = torch.log_softmax(clf(xt, t), -1)
        expect = -logp[torch.arange(64), y]
        assert loss.shape == (64,)
        torch.testing.assert_close(loss, expect, rtol=1e-5, atol=1e-6)
        # not vacuous: the levels differ per example, the noise changes the answer, so does the label
        assert t.std() > 0.1
        assert (expect - (-torch.log_softmax(clf(x0, t), -1)[torch.arange(64), y])).abs().max() > 1e-3
        other = (y + 1) % 5
        assert ((expect - (-logp[torch.arange(64), other])).abs() > 1e-6).all()
    with pytest.raises(ValueError, match="needs the labels"):
        classifier_loss(clf, x0, None)


def test_load_classifier_refuses_other_checkpoints(tmp_path):
    from sbm.core.model import ScoreModel
    from sbm.models.score import save_model
    from sbm.nets.score import MLPNet

    save_model(tmp_path / "score.safetensors", ScoreModel(MLPNet(2, 8, 1, 8), VP))
    with pytest.raises(CheckpointError, match="not a noisy classifier"):
        load_classifier(tmp_path / "score.safetensors")


def test_noise_quarters_partition_the_training_times():
    q = noise_quarters(VP)
    assert q[0][0] == VP.t_min and q[-1][1] == 1.0
    assert all(abs(b[0] - a[1]) < 1e-12 for a, b in zip(q, q[1:]))


def test_short_training_separates_low_from_high_noise(mixture, tmp_path):
    """A few hundred steps of `sbm.train.loop.train` on the 2-D mixture with labels = component:
    near the exact classifier's accuracy at low noise, near chance at high noise."""
    x, y = mixture.sample(4000, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    clf = NoisyClassifier((2,), 3, VP, hidden=64, embedding_dim=32, depth=2, data_std=float(x.std()))
    cfg = TrainParams(steps=300, batch_size=256, lr=3e-3, warmup_steps=20, ema_decay=0.99, log_every=50,
                      checkpoint_every=10_000)
    trained, result = train(clf, classifier_loss, x, cfg, seed=0, ckpt_dir=tmp_path, cond=y, progress=False)
    assert result.steps == 300 and math.isfinite(result.final_loss)
    xt, yt = mixture.sample(2000, generator=torch.Generator().manual_seed(2))
    acc = accuracy_by_noise_quarter(trained, xt, yt, generator=torch.Generator().manual_seed(3))
    exact = accuracy_by_noise_quarter(MixtureClassifier(mixture, VP), xt, yt,
                                      generator=torch.Generator().manual_seed(3))
    assert acc == accuracy_by_noise_quarter(trained, xt, yt, generator=torch.Generator().manual_seed(3))
    assert list(acc) == ["q1", "q2", "q3", "q4"]
    chance = float(mixture.weights.max())  # always guessing the heaviest component
    assert acc["q1"] > 0.9 and acc["q1"] > chance + 0.2, acc
    assert acc["q1"] > acc["q4"] + 0.2, acc
    assert acc["q1"] > exact["q1"] - 0.05, (acc, exact)
    assert acc["q4"] < exact["q4"] + 0.05, (acc, exact)  # nobody beats the Bayes classifier
