"""The KL autoencoder (shapes, training, scale factor, checkpoints) and the latent likelihood bound,
checked against a linear-Gaussian latent model whose exact NLL and posterior are known."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from sbm.config.params import load_params
from sbm.latent.vae import (
    VAE,
    build_vae,
    diag_gaussian_kl,
    encode_dataset,
    latent_nll_bound,
    latent_scale,
    load_vae,
    reconstruction_metrics,
    save_vae,
    standard_normal_log_pz,
    vae_loss,
)
from sbm.train.loop import loop_params

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _digits(n):
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.from_numpy(d.data[:n] / 16.0 * 2.0 - 1.0).float().reshape(-1, 1, 8, 8)


def _small_cfg(**kw):
    cfg = load_params(ROOT / "params.yaml").vae
    return dataclasses.replace(cfg, **{"channels": [16, 32, 32], "norm_groups": 8, **kw})


# --------------------------------------------------------------------------- the VAE


def test_shapes_and_round_trips():
    torch.manual_seed(0)
    vae = build_vae(_small_cfg(), [1, 8, 8])
    assert vae.latent_shape == (4, 2, 2)  # 3 blocks: factor 4
    x = _digits(10)
    mean, logvar = vae.posterior(x)
    assert mean.shape == logvar.shape == (10, 4, 2, 2)
    z = vae.encode(x)
    torch.testing.assert_close(z, mean)
    zs = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
    assert zs.shape == z.shape and not torch.allclose(zs, z)
    assert vae.decode(z).shape == x.shape
    assert vae.encode(x.flatten(1)).shape == z.shape  # flat (N, 64) input is viewed as (N, 1, 8, 8)
    vae.scale = 2.5
    torch.testing.assert_close(vae.encode(x, scaled=True), 2.5 * z)
    torch.testing.assert_close(vae.decode(2.5 * z, scaled=True), vae.decode(z))
    loss = vae_loss(vae, x)
    assert loss.shape == (10,) and torch.isfinite(loss).all()
    # factor 2 and odd sizes (padded inside, cropped back)
    vae2 = build_vae(_small_cfg(channels=[16, 32], latent_channels=3), [3, 7, 5])
    assert vae2.latent_shape == (3, 4, 3)
    x2 = torch.rand(2, 3, 7, 5) * 2 - 1
    assert vae2.encode(x2).shape == (2, 3, 4, 3) and vae2.decode(vae2.encode(x2)).shape == x2.shape
    with pytest.raises(ValueError, match=r"needs image data \(C, H, W\)"):
        build_vae(_small_cfg(), [64])


def _expected_vae_loss(vae, x, kl_weight, seed):
    """Eq. (3) written out from the VAE's own encoder and decoder outputs, with z drawn as the
    loss draws it (ε ~ N(0, I) from the global generator after the encoder ran)."""
    torch.manual_seed(seed)
    mean, logvar = vae.posterior(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    xhat = vae.decode(z)
    std = vae.decoder_std().reshape(-1, 1, 1)  # σ_dec per image channel
    rec = ((x - xhat) ** 2 / (2 * std**2) + torch.log(std) + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)
    return rec, kl


@pytest.mark.parametrize("decoder_std", [None, 0.3])
def test_vae_loss_is_gaussian_nll_plus_weighted_kl(decoder_std):
    """vae_loss = Σ_pixels [(x − x̂)²/(2σ_dec²) + log σ_dec + ½ log 2π] + β·½Σ_latent[μ² + σ² − 1 − log σ²],
    per example, for two β, a learned σ_dec that differs per channel, and a fixed one: a loss that
    drops the KL, ignores β, flips its sign, averages instead of sums or forgets log σ_dec fails."""
    torch.manual_seed(0)
    vae = build_vae(_small_cfg(channels=[16, 32], latent_channels=3, decoder_std=decoder_std), [3, 8, 8])
    if decoder_std is None:  # a learned σ_dec: make the three channels differ so a broadcast slip shows
        with torch.no_grad():
            vae.net.log_std.copy_(torch.log(torch.tensor([0.1, 0.3, 0.7])).reshape(3, 1, 1))
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    losses = {}
    with torch.no_grad():
        for beta in (1.0, 0.25):
            vae.kl_weight = beta
            torch.manual_seed(11)
            losses[beta] = vae_loss(vae, x)
            rec, kl = _expected_vae_loss(vae, x, beta, seed=11)
            assert losses[beta].shape == (6,)
            torch.testing.assert_close(losses[beta], rec + beta * kl, rtol=1e-5, atol=1e-4)
        # the KL term is material here (not lost in rounding), and β scales exactly it
        assert (kl > 1.0).all()
        torch.testing.assert_close(losses[1.0] - losses[0.25], 0.75 * kl, rtol=1e-4, atol=1e-3)
        # the flat (N, C·H·W) input is viewed as images
        torch.manual_seed(11)
        torch.testing.assert_close(vae_loss(vae, x.flatten(1)), losses[0.25])


def test_diag_gaussian_kl_matches_torch_distributions():
    from torch.distributions import Normal, kl_divergence

    g = torch.Generator().manual_seed(2)
    mean, logvar = torch.randn(5, 3, 2, 2, generator=g), torch.randn(5, 3, 2, 2, generator=g)
    expect = kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(diag_gaussian_kl(mean, logvar), expect)
    torch.testing.assert_close(diag_gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4)), torch.zeros(2))


def test_fixed_and_learned_decoder_std():
    learned = build_vae(_small_cfg(), [1, 8, 8])
    assert any(n == "log_std" for n, _ in learned.net.named_parameters())
    fixed = build_vae(_small_cfg(decoder_std=0.25), [1, 8, 8])
    assert not any(n == "log_std" for n, _ in fixed.net.named_parameters())
    torch.testing.assert_close(fixed.decoder_std(), torch.tensor([0.25]))
    x, z = _digits(4), torch.randn(4, 4, 2, 2)
    xhat = fixed.decode(z)
    expect = (-(x - xhat) ** 2 / (2 * 0.25**2) - math.log(0.25) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    torch.testing.assert_close(fixed.decoder_log_prob(x, z), expect)


def test_brief_training_reconstructs_better_than_init_and_scale_gives_unit_std(tmp_path):
    from sbm.train.loop import train

    params = load_params(ROOT / "params.yaml")
    x = _digits(256)
    torch.manual_seed(0)
    vae = build_vae(_small_cfg(), [1, 8, 8])
    before = reconstruction_metrics(vae, x)
    cfg = dataclasses.replace(loop_params(params.train, _small_cfg(steps=150, batch_size=64, lr=2e-3)),
                              warmup_steps=10, ema_decay=0.0, log_every=50)
    assert (cfg.steps, cfg.batch_size, cfg.lr) == (150, 64, 2e-3)
    trained, _ = train(vae, vae_loss, x, cfg, seed=0, ckpt_dir=tmp_path / "ckpt", progress=False)
    trained = trained.cpu()  # the loop may have used a GPU
    after = reconstruction_metrics(trained, x)
    print(f"VAE 150 steps: mse {before['mse']:.3f} -> {after['mse']:.3f}, psnr {before['psnr']:.1f} -> "
          f"{after['psnr']:.1f} dB, kl {after['kl']:.1f} nats")
    assert after["mse"] < 0.5 * before["mse"]
    assert after["psnr"] == pytest.approx(10 * math.log10(4 / after["mse"]))

    s = latent_scale(trained, x, generator=torch.Generator().manual_seed(0))
    trained.scale = s
    same = encode_dataset(trained, x, generator=torch.Generator().manual_seed(0))
    assert float(same.double().std()) == pytest.approx(1.0, abs=1e-5)
    fresh = encode_dataset(trained, x, generator=torch.Generator().manual_seed(1))  # other posterior draws
    assert float(fresh.double().std()) == pytest.approx(1.0, abs=0.05)

    # the checkpoint carries weights, config and the scale
    save_vae(tmp_path / "vae.safetensors", trained)
    loaded, meta = load_vae(tmp_path / "vae.safetensors")
    assert meta["scale"] == s and loaded.scale == s
    torch.testing.assert_close(loaded.encode(x[:8], scaled=True), trained.encode(x[:8], scaled=True))
    torch.testing.assert_close(loaded.decoder_std(), trained.decoder_std())

    # bound through the VAE with its own N(0, I) prior: finite, IWAE never looser than the average
    b = latent_nll_bound(trained, x[:32], standard_normal_log_pz(s), n_samples=4,
                         generator=torch.Generator().manual_seed(0))
    assert all(v.shape == (32,) and torch.isfinite(v).all() for v in b.values())
    assert (b["nll_iwae"] <= b["nll"] + 1e-9).all()
    torch.testing.assert_close(b["nll"], b["rec"] + b["kl"])


# --------------------------------------------------------------------------- analytic latent model


class LinearGaussianLatentModel:
    """Probabilistic PCA with a known answer: z ~ N(0, I_k), x = W z + b + σ ε in R^D.

    W = Q diag(a) with orthonormal Q, so p(x) = N(b, W Wᵀ + σ² I) and the exact posterior
    p(z|x) = N(M⁻¹ Wᵀ(x − b), σ² M⁻¹), M = WᵀW + σ² I = diag(a² + σ²), is diagonal. The
    encoder can be made inexact by shifting its mean and scaling its variance. Same
    interface as `sbm.latent.vae.VAE`: posterior, decode, decoder_log_prob, scale."""

    def __init__(self, dim=6, k=3, sigma=0.5, mean_shift=0.0, var_factor=1.0, scale=1.0, seed=0):
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, k, generator=g, dtype=torch.float64))
        self.a = torch.tensor([2.0, 1.0, 0.6], dtype=torch.float64)[:k]
        self.W = q * self.a
        self.b = torch.randn(dim, generator=g, dtype=torch.float64) * 0.3
        self.sigma, self.dim, self.k = sigma, dim, k
        self.mean_shift, self.var_factor, self.scale = mean_shift, var_factor, scale

    def sample(self, n, generator):
        z = torch.randn(n, self.k, generator=generator, dtype=torch.float64)
        return z @ self.W.T + self.b + self.sigma * torch.randn(n, self.dim, generator=generator, dtype=torch.float64)

    def exact_nll(self, x):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.dim, dtype=torch.float64)
        return -torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)

    def exact_posterior(self, x):
        m = self.a**2 + self.sigma**2
        return ((x - self.b) @ self.W) / m, (self.sigma**2 / m).log().expand(len(x), self.k)

    def posterior(self, x):
        mean, logvar = self.exact_posterior(x)
        return mean + self.mean_shift, logvar + math.log(self.var_factor)

    def decode(self, z):
        return z @ self.W.T + self.b

    def decoder_log_prob(self, x, z):
        r = x - self.decode(z)
        return (-0.5 * r.pow(2) / self.sigma**2 - math.log(self.sigma) - 0.5 * math.log(2 * math.pi)).sum(1)

    def gap(self, x):
        """KL(q(z|x) ‖ p(z|x)) in closed form: the exact excess of the ELBO bound (5) over −log p(x)."""
        mq, lq = self.posterior(x)
        mp, lp = self.exact_posterior(x)
        return 0.5 * (lq.exp() / lp.exp() + (mq - mp).pow(2) / lp.exp() - 1 + lp - lq).sum(1)


@pytest.mark.parametrize("scale", [1.0, 2.5, 0.3])
def test_bound_is_exact_with_the_exact_posterior(scale):
    model = LinearGaussianLatentModel(scale=scale)
    x = model.sample(200, torch.Generator().manual_seed(1))
    # p(z) = N(0, I) is the density of z; the prior over z_s = s z is N(0, s² I), eq. (6)
    b = latent_nll_bound(model, x, standard_normal_log_pz(scale), n_samples=3,
                         generator=torch.Generator().manual_seed(2))
    exact = model.exact_nll(x)
    # every importance weight equals p(x): zero Monte-Carlo variance
    torch.testing.assert_close(b["nll"], exact, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(b["nll_iwae"], exact, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(b["bpd"], exact / (model.dim * math.log(2)), atol=1e-9, rtol=1e-9)
    # without the d·log s of eq. (6) the "prior" N(0, s² I) on z_s would give log N(s z; 0, s² I),
    # which differs from log N(z; 0, I) by exactly −d·log s: the bound would be off by d·log s
    z = torch.randn(7, model.k, dtype=torch.float64)
    torch.testing.assert_close(standard_normal_log_pz(scale)(scale * z) + model.k * math.log(scale),
                               standard_normal_log_pz(1.0)(z))


@pytest.mark.parametrize("shift,factor", [(0.3, 1.0), (0.0, 0.4), (0.0, 2.5), (-0.5, 1.7)])
def test_bound_is_never_below_the_exact_nll_and_its_gap_is_the_posterior_kl(shift, factor):
    model = LinearGaussianLatentModel(mean_shift=shift, var_factor=factor, scale=1.7)
    x = model.sample(100, torch.Generator().manual_seed(3))
    k = 400
    b = latent_nll_bound(model, x, standard_normal_log_pz(1.7), n_samples=k,
                         generator=torch.Generator().manual_seed(4))
    exact = model.exact_nll(x)
    assert (b["nll"] >= exact).all()  # every point: the gap (≥ 0.38 nats) is far above the MC error of 400 draws
    gap = b["nll"] - exact
    # per point the estimated gap is the mean of k draws; averaged over 100 points its
    # Monte-Carlo error is far below the 5% tolerance used here
    assert float(gap.mean()) == pytest.approx(float(model.gap(x).mean()), rel=0.05)
    # IWAE, eq. (7): never looser than the average (Jensen, deterministic); an upper bound in
    # expectation only (one estimate of −log mean(w) can dip below −log p(x)), with a bias
    # O(1/k): on average over the points it sits much closer to the exact NLL
    assert (b["nll_iwae"] <= b["nll"] + 1e-12).all()
    assert abs(float((b["nll_iwae"] - exact).mean())) < 0.2 * float(gap.mean())


def test_reconstruction_metrics_on_the_analytic_model():
    model = LinearGaussianLatentModel()
    x = model.sample(300, torch.Generator().manual_seed(5))
    m = reconstruction_metrics(model, x)
    mean, logvar = model.posterior(x)
    mse = float((model.decode(mean) - x).pow(2).mean())
    kl = float(0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean())
    assert m["mse"] == pytest.approx(mse) and m["kl"] == pytest.approx(kl)
    assert m["psnr"] == pytest.approx(10 * math.log10(4.0 / mse))


def test_vae_config_round_trip_and_bad_settings():
    vae = build_vae(_small_cfg(kl_weight=0.5, decoder_std=0.2), [1, 8, 8])
    twin = VAE(**vae.to_config())
    assert twin.to_config() == vae.to_config() and twin.kl_weight == 0.5
    with pytest.raises(ValueError, match=r"vae\.channels = \[16, 20\]"):
        VAE([1, 8, 8], [16, 20], norm_groups=8)


def test_latent_nll_metrics_puts_the_ode_prior_of_the_score_model_into_the_bound():
    """With the exact posterior and the exact score of the scaled prior N(0, s² I) under a VE
    process, the ODE log p(z_s) makes the bound the exact −log p(x) (up to σ_min and the solver)."""
    from sbm.config.params import LikelihoodParams
    from sbm.core.model import AnalyticScoreModel
    from sbm.core.processes import VESDE
    from sbm.eval.likelihood import latent_nll_metrics

    s = 1.7
    model = LinearGaussianLatentModel(scale=s)
    x = model.sample(40, torch.Generator().manual_seed(5))
    process = VESDE(0.01, 20.0, t_min=0.0)

    def score(z, t):  # p_t = N(0, (s² + σ(t)²) I)
        _, sig = process.marginal(t)
        return -z / (s**2 + sig.reshape(-1, 1) ** 2)

    cfg = LikelihoodParams(divergence="exact", rtol=1e-7, atol=1e-7, n_points=40, batch_size=20)
    flat, detail = latent_nll_metrics(AnalyticScoreModel(score, process), model, x, {"n_levels": None}, cfg,
                                      seed=0, bound_samples=2, progress=False)
    exact = float(model.exact_nll(x).mean())
    assert flat["nll_bound"] == pytest.approx(exact, abs=2e-3)
    assert flat["bpd_bound"] == pytest.approx(exact / (model.dim * math.log(2)), abs=1e-3)
    assert flat["nll_bound"] == pytest.approx(flat["bound_rec"] + flat["bound_kl"])
    assert detail["likelihood"]["bound"] is True and detail["likelihood"]["n"] == 40 and flat["nll_nfe"] > 0


def test_space_directories_round_trip_and_refuse_a_stale_space(tmp_path):
    from sbm.latent.space import check_space, load_latents, read_space
    from sbm.latent.vae import decode_samples, load_space_vae, write_space

    vae = build_vae(_small_cfg(channels=[16, 32]), [1, 8, 8])
    vae.scale = 2.0
    z = {"train": torch.randn(5, *vae.latent_shape), "test": torch.randn(3, *vae.latent_shape)}
    info = write_space(tmp_path / "lat", [1, 8, 8], vae, z)
    assert info == read_space(tmp_path / "lat") and info["shape"] == [4, 4, 4] and info["scale"] == 2.0
    torch.testing.assert_close(load_latents(tmp_path / "lat", "test"), z["test"])
    loaded = load_space_vae(tmp_path / "lat")
    with torch.no_grad():
        x = decode_samples(loaded, z["train"], data_range=(-1.0, 1.0))
        torch.testing.assert_close(x, vae.decode(z["train"] / 2.0).clamp(-1, 1))
    assert x.shape == (5, 1, 8, 8)
    with pytest.raises(ValueError, match="score.space = 'pixel', but .* holds a 'latent' space"):
        check_space(tmp_path / "lat", "pixel")
    # rewritten as a pixel space: the VAE and latents are gone, samples pass through
    assert write_space(tmp_path / "lat", [1, 8, 8])["space"] == "pixel"
    assert load_space_vae(tmp_path / "lat") is None and not (tmp_path / "lat" / "vae.safetensors").exists()
    y = torch.randn(4, 1, 8, 8) * 3
    torch.testing.assert_close(decode_samples(None, y), y)
    with pytest.raises(FileNotFoundError, match="run the train_vae stage"):
        read_space(tmp_path / "nowhere")


def test_training_set_serves_latents_or_pixels_with_the_space_meta(tmp_path):
    from sbm.config.params import parse_params
    from sbm.latent.vae import write_space
    from sbm.pipeline import data
    from sbm.pipeline.prepared import load_split
    from sbm.pipeline.spaces import training_set

    meta = data.prepare(parse_params({"data": {"name": "digits"}}).data, 0, tmp_path / "prepared")
    x, y = load_split(tmp_path / "prepared", "train")
    write_space(tmp_path / "pixel", meta["shape"])
    xp, yp, mp = training_set(tmp_path / "prepared", tmp_path / "pixel", "pixel", "train")
    assert torch.equal(xp, x) and torch.equal(yp, y) and mp["shape"] == [1, 8, 8] and mp["sigma_max"] == meta["sigma_max"]
    vae = build_vae(_small_cfg(channels=[16, 32]), [1, 8, 8])
    z = {"train": 3 * torch.randn(len(x), *vae.latent_shape), "test": torch.randn(5, *vae.latent_shape)}
    write_space(tmp_path / "latent", meta["shape"], vae, z)
    xl, yl, ml = training_set(tmp_path / "prepared", tmp_path / "latent", "latent", "train")
    assert torch.equal(xl, z["train"]) and torch.equal(yl, y)  # latents keep the order of the split's labels
    assert ml["shape"] == [4, 4, 4] and ml["dim"] == 64
    assert ml["sigma_max"] == pytest.approx(float(torch.cdist(xl.flatten(1).double(), xl.flatten(1).double()).max()))
    with pytest.raises(ValueError, match="5 latents for the test split"):
        training_set(tmp_path / "prepared", tmp_path / "latent", "latent", "test")


class _ScaledCopy:
    """An autoencoder whose latent is the image times `gain`, decoded as latent / gain · shrink, with a
    posterior of zero variance: shrink = 1 reconstructs every image exactly, shrink < 1 loses contrast."""

    def __init__(self, shrink: float = 1.0, gain: float = 2.0):
        self.shrink, self.gain, self.scale = shrink, gain, 0.5

    def posterior(self, x):
        mean = x * self.gain
        return mean, torch.full_like(mean, float("-inf"))

    def decode(self, z, *, scaled: bool = False):
        z = z / self.scale if scaled else z
        return z / self.gain * self.shrink


def test_the_reconstruction_ceiling_is_the_floor_for_an_exact_autoencoder_and_rises_with_its_loss():
    """sbm.pipeline.measured.reconstruction_ceiling: the training split through the autoencoder and written
    as samples are, against test. An exact autoencoder reproduces the training images, so both FID ceilings
    are the floor to the last bit; one that halves the contrast is far above it."""
    from sbm.eval.quality import QualityMeter
    from sbm.pipeline.measured import Measured, reconstruction_ceiling

    x = _digits(600)
    train, test = x[:400], x[400:]
    meta = {"shape": [1, 8, 8], "value_range": [-1.0, 1.0], "n_levels": 17}

    class Flat(torch.nn.Module):
        num_features = 64

        def forward(self, v):
            return v.reshape(len(v), -1).double()

    def ceiling(vae):
        d = Measured(meta, [1, 8, 8], vae, None, train, test, True)
        return reconstruction_ceiling(d, QualityMeter(Flat(), test.reshape(len(test), -1).double(), kid_subsets=5,
                                                      kid_subset_size=100), seed=0)

    exact = ceiling(_ScaledCopy())
    assert set(exact) == {f"ceiling_{m}_{w}" for m in ("fid", "kid") for w in ("mean", "sample", "floor")}
    assert exact["ceiling_fid_mean"] == exact["ceiling_fid_sample"] == exact["ceiling_fid_floor"] > 0
    # (KID draws its subsets in the floor's own order, so it agrees only up to their noise)
    lossy = ceiling(_ScaledCopy(shrink=0.5))
    assert lossy["ceiling_fid_floor"] == exact["ceiling_fid_floor"]
    assert lossy["ceiling_fid_mean"] > 3 * lossy["ceiling_fid_floor"]  # 12.3 against 3.69
    assert lossy["ceiling_kid_mean"] > 3 * lossy["ceiling_kid_floor"]
    with pytest.raises(ValueError, match="no autoencoder"):
        reconstruction_ceiling(Measured(meta, [1, 8, 8], None, None, train, test, True), None, seed=0)
