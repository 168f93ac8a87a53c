"""Samples written on the data's grid (sbm.core.units eq. 8, params sampler.quantize): the rounding
itself, the one decision of which samples get it (`sample_format`), every path that writes samples
(`decode_samples`, `Measured.decode`, the CLI) and the peer benchmark writing the diffusers recipe's
samples the same way."""

import subprocess
import sys

import pytest
import torch

from sbm.core.model import ScoreModel
from sbm.core.processes import VPSDE
from sbm.core.units import bin_width, quantize
from sbm.latent.vae import decode_samples
from sbm.models.score import save_model
from sbm.nets.score import UNetNet
from sbm.pipeline.measured import Measured
from sbm.pipeline.prepared import sample_format

DIGITS = {"shape": [1, 8, 8], "value_range": [-1.0, 1.0], "n_levels": 17}


def on_grid(x: torch.Tensor, n_levels: int, lo: float = -1.0, hi: float = 1.0) -> bool:
    k = (x.double() - lo) / bin_width(n_levels, (lo, hi))
    return bool(((k - k.round()).abs() < 1e-4).all() and (k >= -1e-4).all() and (k <= n_levels - 1 + 1e-4).all())


@pytest.mark.parametrize("n_levels, lo, hi", [(17, -1.0, 1.0), (256, -1.0, 1.0), (5, 0.0, 2.0)])
def test_quantize_rounds_to_the_nearest_level_and_clamps(n_levels, lo, hi):
    delta = bin_width(n_levels, (lo, hi))
    x = lo + (hi - lo) * (1.4 * torch.rand(4000, generator=torch.Generator().manual_seed(0)) - 0.2)
    q = quantize(x, n_levels, (lo, hi))
    assert q.shape == x.shape and q.dtype == x.dtype and on_grid(q, n_levels, lo, hi)
    inside = (x >= lo) & (x <= hi)
    # the nearest level: within half a bin of the input (float32 round-off aside)
    assert float((q[inside] - x[inside]).abs().max()) <= delta / 2 + 1e-6
    # outside the range: the end level
    assert torch.all(q[x < lo] == lo) and torch.all(q[x > hi] == hi)
    assert torch.equal(quantize(q, n_levels, (lo, hi)), q)  # idempotent


def test_quantize_is_the_identity_on_the_grid_and_moves_a_half_bin_offset_by_one_level_at_most():
    grid = torch.linspace(-1, 1, 17)
    assert torch.equal(quantize(grid, 17), grid)
    delta = bin_width(17)
    shifted = quantize(grid[:-1] + 0.49 * delta, 17)
    assert torch.equal(shifted, grid[:-1])  # below the midpoint: back to the same level
    assert torch.allclose(quantize(grid[:-1] + 0.51 * delta, 17), grid[1:])  # past it: the next one


def test_sample_format_images_of_quantised_data_only():
    assert sample_format(DIGITS, quantize=True) == {"data_range": [-1.0, 1.0], "n_levels": 17}
    assert sample_format(DIGITS, quantize=False) == {"data_range": [-1.0, 1.0], "n_levels": None}
    continuous = {**DIGITS, "n_levels": None}  # an hf image column without n_levels
    assert sample_format(continuous, quantize=True) == {"data_range": [-1.0, 1.0], "n_levels": None}
    toy = {"shape": [2], "value_range": None, "n_levels": None}
    assert sample_format(toy, quantize=True) == {}
    # a checkpoint's metadata names the same things data_shape / data_range
    ckpt = {"data_shape": [1, 8, 8], "data_range": [-1.0, 1.0], "n_levels": 17}
    assert sample_format(ckpt, quantize=True) == {"data_range": [-1.0, 1.0], "n_levels": 17}


def test_decode_samples_quantises_a_pixel_model_and_refuses_levels_without_a_range():
    z = 1.3 * torch.randn(50, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    x = decode_samples(None, z, **sample_format(DIGITS, quantize=True))
    assert on_grid(x, 17) and float((x - z.clamp(-1, 1)).abs().max()) <= bin_width(17) / 2 + 1e-6
    assert torch.equal(decode_samples(None, z, **sample_format(DIGITS, quantize=False)), z.clamp(-1, 1))
    with pytest.raises(ValueError, match="n_levels needs the data_range"):
        decode_samples(None, z, n_levels=17)


def test_measured_decode_follows_its_quantize_setting():
    z = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    empty = torch.zeros(1, 1, 8, 8)
    on = Measured(DIGITS, [1, 8, 8], None, None, empty, empty, quantize=True)
    off = Measured(DIGITS, [1, 8, 8], None, None, empty, empty, quantize=False)
    assert on_grid(on.decode(z), 17)
    assert torch.equal(off.decode(z), z.clamp(-1, 1)) and not on_grid(off.decode(z), 17)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "sbm", *map(str, args)], capture_output=True, text=True)


def test_cli_samples_land_on_the_checkpoints_levels_unless_continuous(tmp_path):
    path = tmp_path / "score.safetensors"
    torch.manual_seed(0)
    save_model(path, ScoreModel(UNetNet(1, 8, 8, [16, 16], 1, [False, False], False), VPSDE()),
               extra={"data_shape": [1, 8, 8], "data_range": [-1.0, 1.0], "n_levels": 17})
    from sbm.io import load_tensors

    xs = {}
    for flags in ((), ("--continuous",)):
        save = tmp_path / f"x{len(flags)}.safetensors"
        proc = _cli("sample", "--checkpoint", path, "--n", 16, "--sampler", "ddim", "--steps", 5,
                    "--out", tmp_path / "g.png", "--save", save, *flags)
        assert proc.returncode == 0, proc.stderr
        xs[flags] = load_tensors(save)[0]["x"]
    assert on_grid(xs[()], 17)
    assert not on_grid(xs[("--continuous",)], 17)
    assert float((xs[()] - xs[("--continuous",)]).abs().max()) <= bin_width(17) / 2 + 1e-6  # same draws, rounded


# --------------------------------------------------------------------------- copies of the training data (eq. 3)


def test_memorisation_counts_exact_copies_and_reads_the_test_split_as_its_reference():
    from sbm.eval.distances import memorisation, nearest_distances

    g = torch.Generator().manual_seed(3)
    train, test = torch.randn(300, 1, 4, 4, generator=g), torch.randn(200, 1, 4, 4, generator=g)
    # a copier: every sample a training example
    copier = train[torch.randint(0, 300, (150,), generator=g)]
    m = memorisation(copier, train, test)
    assert m["copies"] == 1.0 and m["copies_floor"] == 0.0 and m["nn_ratio"] == 0.0
    # a model of the same distribution that copies nothing: nn_ratio near 1
    fresh = torch.randn(2000, 1, 4, 4, generator=g)
    m = memorisation(fresh, train, test)
    assert m["copies"] == 0.0 and 0.9 < m["nn_ratio"] < 1.1
    # half copies, half fresh: half the samples at distance 0
    half = torch.cat([copier[:100], fresh[:100]])
    assert memorisation(half, train, test)["copies"] == 0.5
    # the test split's duplicates of training examples make the floor
    assert memorisation(half, train, torch.cat([test[:150], train[:50]]))["copies_floor"] == 0.25
    # a test split that is the training split is no reference: refused, not a division by zero
    with pytest.raises(ValueError, match="no reference"):
        memorisation(fresh, train, train[:100])
    # nearest distances against a brute-force loop
    d = nearest_distances(fresh[:20], train)
    brute = torch.stack([(train.flatten(1).double() - f.flatten().double()).norm(dim=1).min() for f in fresh[:20]])
    torch.testing.assert_close(d, brute)


def test_the_evaluate_stage_copy_check_reports_copies_and_steps_aside_without_a_reference():
    """sbm.pipeline.evaluation.copy_check: the eq. (3) figures as metrics.json's record, and None with a
    warning (not a failed stage) when the test split is no reference."""
    from sbm.pipeline.evaluation import copy_check

    g = torch.Generator().manual_seed(4)
    train, test = torch.randn(300, 1, 4, 4, generator=g), torch.randn(200, 1, 4, 4, generator=g)
    c = copy_check(train[:120], train, test)
    assert (c.copies, c.copies_floor, c.nn_ratio) == (1.0, 0.0, 0.0)
    assert c.to_json() == {"copies": 1.0, "copies_floor": 0.0, "nn_ratio": 0.0}
    with pytest.warns(UserWarning, match="no copy check.*no reference"):
        assert copy_check(test, train, train[:100]) is None


# --------------------------------------------------------------------------- benchmarks/quantized_samples.py


@pytest.fixture(scope="module")
def qbench(benchmark_script):
    return benchmark_script("quantized_samples")


def test_benchmark_scores_the_same_draws_continuous_and_quantised(qbench, tmp_path):
    """On prepared digits, an untrained tiny U-Net and a tiny evaluator: two rows per NFE, the same
    samples (so the same NFE), the quantised ones scored as quantised data and their floor recorded."""
    import json

    import yaml

    from sbm.config.params import parse_params
    from sbm.core.processes import build_process
    from sbm.eval.evaluator import EVALUATOR_FILE, save_evaluator, train_evaluator
    from sbm.nets.score import build_net
    from sbm.pipeline import data
    from sbm.pipeline.prepared import load_split

    raw = {"seed": 0, "score": {"space": "pixel"}, "data": {"name": "digits"},
           "model": {"unet": {"channels": [8, 8], "layers_per_block": 1, "attention": [False, False],
                              "mid_attention": False, "norm_groups": 4}},
           "evaluator": {"channels": [8, 16], "hidden": 16, "steps": 20, "kid_subsets": 5, "kid_subset_size": 50},
           "sampler": {"name": "dpmpp_2m", "steps": 5, "batch_size": 100}}
    params = parse_params(raw)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    meta = data.prepare(params.data, params.seed, tmp_path / "prepared")
    x, y = load_split(tmp_path / "prepared", "train")
    save_evaluator(tmp_path / "evaluator" / EVALUATOR_FILE, train_evaluator(x, y, params.evaluator, 0), {})
    torch.manual_seed(0)
    model = ScoreModel(build_net(params.model, meta["shape"]), build_process(params.process, meta), "eps")
    save_model(tmp_path / "score.safetensors", model, extra={"data_shape": meta["shape"]})
    out = tmp_path / "q.json"
    report = qbench.main(["--params", str(tmp_path / "params.yaml"), "--data", str(tmp_path / "prepared"),
                          "--model", str(tmp_path / "score.safetensors"), "--evaluator", str(tmp_path / "evaluator"),
                          "--nfe", "3", "--n", "100", "--seeds", "2", "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(report["rows"], default=str))
    rows = report["rows"]
    assert [r["format"] for r in rows] == ["continuous", "quantised"] and rows[0]["nfe"] == rows[1]["nfe"] == 3
    assert all(len(r["per_seed"]) == 2 and r["fid"]["mean"] > 0 for r in rows)
    assert rows[0]["fid"]["values"] != rows[1]["fid"]["values"]  # rounding changed what the evaluator sees
    assert report["n_levels"] == 17 and report["floor"]["fid"] > 0


def test_benchmark_refuses_bad_budgets(qbench, capsys):
    with pytest.raises(SystemExit):
        qbench.parse_args(["--nfe", "ten"])
    assert "comma-separated integers" in capsys.readouterr().err
