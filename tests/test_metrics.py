"""sbm.eval.distances against exact answers: known SW₂ values, MMD by brute force, the exact
mixture score, mixture weights and Gaussian entropy."""

import math

import pytest
import torch

from sbm.core.gmm import GaussianMixture
from sbm.core.model import AnalyticScoreModel
from sbm.core.processes import DDPMSchedule, NCSNLadder, ddpm_betas
from sbm.eval.distances import default_bandwidths, distance_report, mmd_rbf, sliced_wasserstein
from sbm.eval.truth import mean_log_density, mixture_weights, score_error_per_level
from sbm.latent.vae import write_space
from sbm.models.score import load_model, save_model

WEIGHTS = [0.6, 0.3, 0.1]
MEANS = [[-4.0, -4.0], [4.0, 4.0], [4.0, -4.0]]
COVS = [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.6], [0.6, 0.8]], [[0.5, 0.0], [0.0, 1.5]]]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def gmm():
    return GaussianMixture(WEIGHTS, MEANS, COVS)


# --------------------------------------------------------------------------- sliced Wasserstein


@pytest.mark.parametrize("dim,m,rtol", [(2, 3.0, 0.03), (4, 2.0, 0.05)])
def test_sw_known_value_for_shifted_gaussians(dim, m, rtol):
    # N(0, I) vs N(m e₁, I): each projection uᵀx is N(0,1) vs N(m u₁, 1), W₂² = m² u₁², so
    # SW₂² = m² E[u₁²] = m²/D. The Monte-Carlo error over P = 4000 directions is
    # std(u₁²)/E[u₁²]/√P ≈ 1.1% (D=2) / 1.6% (D=4) on SW₂², half that on SW₂; the
    # finite-sample bias at n = 2000 is ~2e-3 on SW₂². Tolerances are >= 5 standard errors.
    g = gen(0)
    x = torch.randn(2000, dim, generator=g)
    y = torch.randn(2000, dim, generator=g)
    y[:, 0] += m
    sw = sliced_wasserstein(x, y, 4000, gen(1))
    assert sw == pytest.approx(m / math.sqrt(dim), rel=rtol)


def test_sw_same_distribution_is_near_zero_and_grows_with_shift():
    g = gen(2)
    x = torch.randn(2000, 2, generator=g)
    y = torch.randn(2000, 2, generator=g)
    direction = torch.tensor([0.6, 0.8])
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0]
    sws = [sliced_wasserstein(x + s * direction, y, 500, gen(3)) for s in shifts]
    # Two draws of one distribution: only finite-sample noise (≈0.04 at n = 2000).
    assert sws[0] < 0.1
    assert all(a < b for a, b in zip(sws, sws[1:])), sws
    # a shift by s along a unit direction gives SW₂ = s/√2 in 2-D (see the test above)
    assert sws[-1] == pytest.approx(2.0 / math.sqrt(2), rel=0.1)


def test_sw_subsamples_the_larger_set_and_is_deterministic():
    g = gen(4)
    x = torch.randn(3000, 3, generator=g)
    y = torch.randn(700, 3, generator=g) + 1.0
    a = sliced_wasserstein(x, y, 200, gen(5))
    assert a == sliced_wasserstein(x, y, 200, gen(5))
    assert a != sliced_wasserstein(x, y, 200, gen(6))
    # shift (1,1,1) has norm √3; SW₂ = √3/√3 = 1
    assert a == pytest.approx(1.0, rel=0.15)
    # images (N, C, H, W) are flattened
    imgs = torch.randn(50, 1, 2, 2, generator=g)
    assert sliced_wasserstein(imgs, imgs.clone(), 10, gen(0)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="dimensions differ"):
        sliced_wasserstein(x, torch.zeros(5, 2), 10, gen(0))


def test_sw_does_not_touch_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    sliced_wasserstein(torch.randn(10, 2, generator=gen(0)), torch.zeros(20, 2), 5, gen(1))
    assert torch.rand(1) == before


# --------------------------------------------------------------------------- MMD


def test_mmd_matches_brute_force_definition():
    g = gen(7)
    x, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    bws = [0.7, 1.9]

    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h)) for h in bws)

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    assert mmd_rbf(x, y, bws) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-10, abs=1e-12)


def test_mmd_default_bandwidths_are_median_heuristic():
    y = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # pairwise distances 3, 4, 5: median 4
    assert default_bandwidths(y) == pytest.approx([2.0, 4.0, 8.0])
    x = torch.randn(40, 2, generator=gen(0))
    assert mmd_rbf(x, y) == pytest.approx(mmd_rbf(x, y, [2.0, 4.0, 8.0]), rel=1e-12)


def test_mmd_near_zero_for_same_distribution_and_monotone_in_shift():
    g = gen(8)
    x = torch.randn(1000, 2, generator=g)
    y = torch.randn(1000, 2, generator=g)
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0]
    mmds = [mmd_rbf(x + s, y) for s in shifts]
    # unbiased estimate of 0 under equal distributions: its std is O(1/n) × kernel scale
    # (≈1e-3 here, kernel values up to 3); a shift of 0.25 gives ≈0.04
    assert abs(mmds[0]) < 0.01
    assert all(a < b for a, b in zip(mmds, mmds[1:])), mmds
    assert mmds[1] > 3 * abs(mmds[0]) and mmds[1] > 0.01


# --------------------------------------------------------------------------- distance report


def test_distance_report_floor_and_ratio():
    g = gen(9)
    test = torch.randn(1500, 2, generator=g)
    reference = torch.randn(3000, 2, generator=g)
    good = torch.randn(800, 2, generator=g)
    bad = torch.randn(800, 2, generator=g) + torch.tensor([1.0, 0.0])
    r_good = distance_report(good, test, reference, n_points=1000, n_projections=200, seed=0)
    r_bad = distance_report(bad, test, reference, n_points=1000, n_projections=200, seed=0)
    assert r_good["n"] == 800  # min(n_points, every set)
    assert set(r_good) >= {"n", "swd", "swd_floor", "swd_ratio", "mmd", "mmd_floor", "mmd_bandwidths"}
    # the floor is shared: same test subset, directions and bandwidths
    assert r_good["swd_floor"] == r_bad["swd_floor"] and r_good["mmd_floor"] == r_bad["mmd_floor"]
    assert r_good["swd_floor"] < 0.15 and abs(r_good["mmd_floor"]) < 0.01
    assert r_good["swd_ratio"] < 2.5  # same distribution: within noise of the floor
    assert r_bad["swd_ratio"] > 4 and r_bad["mmd"] > 20 * abs(r_bad["mmd_floor"])
    assert r_bad["swd"] == pytest.approx(1 / math.sqrt(2), rel=0.15)
    assert distance_report(bad, test, reference, 1000, 200, 0) == r_bad  # deterministic


# --------------------------------------------------------------------------- score error


PROCESSES = {
    "ncsn": lambda: NCSNLadder(0.01, 12.0, 10),
    "ddpm": lambda: DDPMSchedule(ddpm_betas("linear", 1000, 1e-4, 0.02)),
}


def _levels(process):
    levels = process.grid()
    return process.grid(20) if len(levels) > 20 else levels


@pytest.mark.parametrize("name", list(PROCESSES))
def test_score_error_of_exact_model_is_zero(gmm, name):
    process = PROCESSES[name]()
    model = AnalyticScoreModel(gmm.exact_score_fn(process), process)
    levels = _levels(process)
    rows = score_error_per_level(model, gmm, levels, 500, gen(0))
    assert len(rows) == len(levels)
    for r, t in zip(rows, levels.tolist()):
        a, s = process.marginal(torch.tensor([t]))
        assert r["t"] == pytest.approx(t) and r["sigma"] == pytest.approx(float(s)) and r["alpha"] == pytest.approx(float(a))
        assert r["score_sq"] > 0
        # the model returns float32 of the float64 truth: only rounding is left
        assert r["rel_err"] < 1e-10, r


@pytest.mark.parametrize("name", list(PROCESSES))
def test_score_error_of_shifted_score_is_norm_of_shift(gmm, name):
    process = PROCESSES[name]()
    exact = gmm.exact_score_fn(process)
    c = torch.tensor([0.3, -0.7], dtype=torch.float64)
    model = AnalyticScoreModel(lambda x, t: exact(x.double(), t) + c, process)
    rows = score_error_per_level(model, gmm, _levels(process), 300, gen(1))
    for r in rows:
        assert r["mse"] == pytest.approx(float(c @ c), rel=1e-9)  # ‖c‖² = 0.58 at every level
        assert r["rel_err"] == pytest.approx(float(c @ c) / r["score_sq"], rel=1e-9)
    # the true score is large at small σ and small at large σ: the relative error follows
    by_sigma = sorted(rows, key=lambda r: r["sigma"])
    assert by_sigma[0]["rel_err"] < by_sigma[-1]["rel_err"]


def test_score_error_is_deterministic_given_generator(gmm):
    process = NCSNLadder(0.05, 10.0, 5)
    model = AnalyticScoreModel(lambda x, t: torch.zeros_like(x), process)  # error = E‖∇log p_t‖²
    a = score_error_per_level(model, gmm, process.grid(), 200, gen(3))
    b = score_error_per_level(model, gmm, process.grid(), 200, gen(3))
    assert a == b
    assert all(r["rel_err"] == pytest.approx(1.0) for r in a)


# --------------------------------------------------------------------------- mixture weights, log-density


def test_mixture_weights_recovered_from_exact_samples(gmm):
    # Components are >= 8 apart with stds <= 1.23, so `nearest_component` mislabels a
    # fraction ~Φ(−4/1.23) ≈ 6e-4 of the points; the multinomial sampling error of each
    # fraction at n = 20000 is sqrt(w(1−w)/n) <= 0.0035. 0.02 is > 5 standard errors.
    x, _ = gmm.sample(20000, generator=gen(10))
    rec = mixture_weights(x, gmm)
    assert len(rec) == 3 and sum(rec) == pytest.approx(1.0)
    assert rec == pytest.approx(WEIGHTS, abs=0.02)
    # the assignment ignores the weights, so samples of other weights read as those weights
    other = GaussianMixture([0.2, 0.2, 0.6], MEANS, COVS)
    x2, _ = other.sample(20000, generator=gen(11))
    assert mixture_weights(x2, gmm) == pytest.approx([0.2, 0.2, 0.6], abs=0.02)
    # everything collapsed onto one mode
    assert mixture_weights(torch.tensor([[4.0, -4.0]]).repeat(10, 1), gmm) == [0.0, 0.0, 1.0]


def test_mixture_weights_assign_by_density_not_posterior():
    # x = 0.1 is closer to the component at +1, but the heavy weight 0.9 of the component
    # at −1 makes it the more probable one a posteriori (log 9 ≈ 2.2 > 0.2 nats).
    g2 = GaussianMixture([0.9, 0.1], [[-1.0, 0.0], [1.0, 0.0]], [torch.eye(2).tolist()] * 2)
    x = torch.tensor([[0.1, 0.0], [0.1, 0.0], [-0.1, 0.0], [0.1, 0.0]])
    assert g2.responsibilities(x).argmax(-1).tolist() == [0, 0, 0, 0]
    assert mixture_weights(x, g2) == [0.25, 0.75]


def test_mean_log_density_equals_negative_entropy_of_gaussian():
    cov = [[2.0, 0.5], [0.5, 1.0]]
    g1 = GaussianMixture([1.0], [[1.0, -1.0]], [cov])
    x, _ = g1.sample(20000, generator=gen(12))
    # E log N(x; μ, Σ) = −(D/2)(1 + log 2π) − ½ log det Σ; std of the mean = sqrt(D/2)/√n ≈ 0.007
    expected = -(1 + math.log(2 * math.pi)) - 0.5 * math.log(2.0 - 0.25)
    assert mean_log_density(x, g1) == pytest.approx(expected, abs=0.04)


def test_mean_log_density_lower_for_shifted_points(gmm):
    x, _ = gmm.sample(5000, generator=gen(13))
    y, _ = gmm.sample(5000, generator=gen(14))
    lx, ly = mean_log_density(x, gmm), mean_log_density(y, gmm)
    assert lx == pytest.approx(ly, abs=0.1)  # two draws of the same distribution
    shifted = mean_log_density(x + torch.tensor([2.0, 2.0]), gmm)
    assert shifted < lx - 1.0


# --------------------------------------------------------------------------- evaluate stage: likelihood


def _evaluate(files: dict) -> dict:
    """What the evaluate stage does (sbm.pipeline.evaluation) on `files`; -> the metrics.json it wrote."""
    from sbm.config.params import load_params
    from sbm.pipeline.evaluation import evaluate

    result = evaluate(load_params(files["params"]), data_dir=files["data"], space_dir=files["space"],
                      evaluator_dir=files["evaluator"], model_path=files["model"], samples_path=files["samples"],
                      progress=False)
    result.write(files["metrics"], files["detail"])
    return result.metrics.to_json()


def _write_prepared(d, x_train, x_test, meta_extra: dict) -> None:
    """The layout of sbm.pipeline.data.prepare: dataset/{train,test} (x flat float32, label int64) + meta.json."""
    import datasets

    from sbm import io

    dim = x_train.shape[1]
    features = datasets.Features({"x": datasets.List(datasets.Value("float32"), length=dim),
                                  "label": datasets.Value("int64")})
    datasets.DatasetDict({
        s: datasets.Dataset.from_dict({"x": x.numpy(), "label": torch.full((len(x),), -1).numpy()},
                                      features=features)
        for s, x in {"train": x_train, "test": x_test}.items()
    }).save_to_disk(str(d / "dataset"))
    io.write_json(d / "meta.json", {
        "shape": [dim], "dim": dim, "n_train": len(x_train), "n_test": len(x_test),
        "value_range": [float(x_train.min()), float(x_train.max())], "n_levels": None, "data_range": None,
        "sigma_max": 12.0, "gmm": None, "n_classes": None, **meta_extra,
    })


def _eval_pipeline(tmp_path, x_train, x_test, meta_extra, process) -> dict:
    """prepared data, an untrained model, samples and params under tmp_path -> evaluate's files."""
    from sbm import io
    from sbm.core.model import ScoreModel
    from sbm.nets.score import MLPNet

    dim = x_train.shape[1]
    _write_prepared(tmp_path / "prepared", x_train, x_test, meta_extra)
    torch.manual_seed(0)
    save_model(tmp_path / "score.safetensors", ScoreModel(MLPNet(dim, hidden=16, depth=1), process))
    io.save_tensors(tmp_path / "samples.safetensors", {"x": x_train[:100] + 0.5},
                    {"kind": "samples", "sampler": "ode_heun"})
    (tmp_path / "params.yaml").write_text(
        "seed: 3\nscore:\n  space: pixel\neval:\n  n_points: 100\n  n_projections: 16\n  n_score_points: 50\n"
        "likelihood:\n  n_points: 40\n  batch_size: 25\n")
    write_space(tmp_path / "space", [dim])  # a pixel-space model, no evaluator (no labels)
    (tmp_path / "evaluator").mkdir()
    io.write_json(tmp_path / "evaluator" / "none.json", {"reason": "no labels"})
    files = {"params": "params.yaml", "data": "prepared", "model": "score.safetensors", "space": "space",
             "evaluator": "evaluator", "samples": "samples.safetensors", "metrics": "reports/metrics.json",
             "detail": "reports/eval_detail.json"}
    return {k: tmp_path / f for k, f in files.items()}


def test_evaluate_stage_reports_nll_and_exact_nll_for_the_mixture(gmm, tmp_path):
    import json

    from sbm.core.processes import VPSDE

    x_train, _ = gmm.sample(300, generator=gen(20))
    x_test, _ = gmm.sample(60, generator=gen(21))
    files = _eval_pipeline(tmp_path, x_train, x_test, {"name": "gmm", "gmm": gmm.to_dict(), "n_classes": 3},
                           VPSDE(0.1, 20, t_min=1e-3))
    flat = _evaluate(files)
    assert json.loads((tmp_path / "reports" / "metrics.json").read_text()) == flat
    assert {"nll", "nll_nfe", "nll_exact", "nll_gap"} <= set(flat) and "bpd" not in flat
    assert {"swd", "mmd", "score_rel_err_mean", "logp_test"} <= set(flat)  # the existing metrics stay
    # nll_exact: −mean true log p₀ of the first likelihood.n_points = 40 test points
    assert flat["nll_exact"] == pytest.approx(float(-gmm.log_prob(x_test[:40].double()).mean()), rel=1e-6)
    assert flat["nll_gap"] == pytest.approx(flat["nll"] - flat["nll_exact"])
    # nll: sbm.core.likelihood.dataset_nll on the same 40 test points, not dequantised, seeded by `seed`
    from sbm.core.likelihood import dataset_nll

    model = load_model(tmp_path / "score.safetensors")[0]
    summary, _ = dataset_nll(model, x_test[:40], batch_size=25, generator=torch.Generator().manual_seed(3))
    assert flat["nll"] == pytest.approx(summary["nll"], rel=1e-9) and flat["nll_nfe"] == summary["nll_nfe"] > 0
    assert "bpd" not in summary  # continuous data: nats, no bits/dim
    detail = json.loads((tmp_path / "reports" / "eval_detail.json").read_text())["likelihood"]
    assert detail["n"] == 40 and detail["batches"] == 2 and detail["dequantized"] is False
    assert detail["divergence"] == "exact"
    assert _evaluate(files) == flat  # same params and seed: the same metrics


def test_evaluate_stage_reports_bits_per_dim_for_quantised_data(tmp_path):
    import json

    from sbm.core.likelihood import dataset_nll
    from sbm.core.processes import VPSDE

    # digits-like: 17 levels k/8 − 1 on [−1, 1], D = 4, no mixture
    x = torch.randint(0, 17, (200, 4), generator=gen(22)).float() / 8 - 1
    files = _eval_pipeline(tmp_path, x[:150], x[150:], {"name": "digits", "n_levels": 17, "data_range": [-1.0, 1.0]},
                           VPSDE(0.1, 20, t_min=1e-3))
    flat = _evaluate(files)
    assert "bpd" in flat and "nll" not in flat
    assert not any(k.startswith(("nll_exact", "nll_gap", "score_")) for k in flat)
    assert math.isfinite(flat["bpd"]) and flat["nll_nfe"] > 0
    detail = json.loads((tmp_path / "reports" / "eval_detail.json").read_text())["likelihood"]
    assert detail["dequantized"] is True and detail["bin_width"] == 0.125 and detail["n"] == 40
    # the stage is sbm.core.likelihood.dataset_nll on the first 40 test points, dequantised, seeded by `seed`
    model = load_model(tmp_path / "score.safetensors")[0]
    summary, _ = dataset_nll(model, x[150:190], batch_size=25, n_levels=17, data_range=(-1, 1),
                             generator=torch.Generator().manual_seed(3))
    assert flat["bpd"] == pytest.approx(summary["bpd"], rel=1e-9)
