"""The one model wrapper: score, ε and x̂₀ converters agree whatever the network predicts;
checkpoints round-trip and corrupt ones are named."""

import pytest
import torch

from sbm.core.model import PREDICTIONS, ScoreModel, from_eps, to_eps
from sbm.core.processes import VPSDE
from sbm.errors import CheckpointError
from sbm.models.score import load_model, save_model
from sbm.nets.score import MLPNet


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_converters_are_inverse(kind):
    """to_eps ∘ from_eps = id for every prediction (edm with its σ_d), both ways round."""
    x, eps, out = torch.randn(8, 3), torch.randn(8, 3), torch.randn(8, 3)
    a, s = torch.rand(8) * 0.9 + 0.05, torch.rand(8) * 0.9 + 0.05
    assert torch.allclose(to_eps(from_eps(eps, x, a, s, kind, 0.7), x, a, s, kind, 0.7), eps, atol=1e-5)
    assert torch.allclose(from_eps(to_eps(out, x, a, s, kind, 0.7), x, a, s, kind, 0.7), out, atol=1e-5)


def test_converters_satisfy_the_perturbation_identities():
    """x_t = α x₀ + σ ε and score = −ε/σ (sbm.models.score eq. 1)."""
    x0, eps = torch.randn(8, 3), torch.randn(8, 3)
    a, s = torch.full((8,), 0.6), torch.full((8,), 0.8)
    xt = a[:, None] * x0 + s[:, None] * eps
    assert torch.allclose(from_eps(eps, xt, a, s, "x0"), x0, atol=1e-6)
    assert torch.allclose(from_eps(eps, xt, a, s, "score"), -eps / 0.8)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_every_parameterisation_gives_consistent_outputs(prediction):
    model = ScoreModel(MLPNet(3, 16, 1, 8), VPSDE(), prediction, data_std=2.0)
    x, t = torch.randn(5, 3), torch.rand(5) * 0.9 + 0.05
    a, s = model.process.marginal(t)
    score, eps, x0 = model.score(x, t), model.eps(x, t), model.x0(x, t)
    assert torch.allclose(score, -eps / s[:, None], atol=1e-5)
    assert torch.allclose(x, a[:, None] * x0 + s[:, None] * eps, atol=1e-5)


def test_checkpoint_round_trip_and_corruption(tmp_path):
    model = ScoreModel(MLPNet(3, 16, 1, 8), VPSDE(0.2, 15.0, 1e-4), "x0", data_std=1.5)
    path = tmp_path / "m.safetensors"
    save_model(path, model, extra={"loss": "dsm"})
    loaded, meta = load_model(path)
    x, t = torch.randn(4, 3), torch.rand(4)
    assert torch.equal(loaded.score(x, t), model.score(x, t)) and meta["loss"] == "dsm"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # flip bits inside the tensor data: the header still parses
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"m\.safetensors: checksum mismatch"):
        load_model(path)
    path.write_bytes(bytes(raw[: len(raw) // 3]))
    with pytest.raises(CheckpointError, match=r"m\.safetensors: corrupt or truncated"):
        load_model(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "absent.safetensors")


def test_a_skipped_stage_file_says_why_and_refuses_to_load_as_a_model(tmp_path):
    """write_skipped stands in for the model of a stage that had nothing to learn: skipped_reason
    reads it back, loading it as a model names the stage and the reason, and a real model, a
    missing or a corrupt file are not 'skipped'."""
    from sbm import io

    path = tmp_path / "classifier.safetensors"
    io.write_skipped(path, "train_classifier", "data 'swiss_roll' has no class labels")
    assert io.skipped_reason(path) == "train_classifier was skipped: data 'swiss_roll' has no class labels"
    with pytest.raises(CheckpointError, match="no score model, stage train_classifier was skipped: data 'swiss_roll'"):
        load_model(path)
    save_model(tmp_path / "m.safetensors", ScoreModel(MLPNet(2, 8, 1, 4), VPSDE()))
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    for other in ("m.safetensors", "absent.safetensors", "bad.safetensors"):
        assert io.skipped_reason(tmp_path / other) is None
