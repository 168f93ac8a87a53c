"""Architectures: the MLP for vectors, the U-Net for images and latents, rebuilt from their config;
a U-Net score model trains with the existing losses."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from sbm.config.params import load_params, parse_params
from sbm.core.losses import build_loss
from sbm.core.model import ScoreModel
from sbm.core.processes import VPSDE, NCSNLadder
from sbm.errors import ConfigError
from sbm.models.score import load_model, save_model
from sbm.nets.score import MLPNet, UNetNet, build_net, net_from_config

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _model_cfg(**unet):
    model = load_params(ROOT / "params.yaml").model
    small = dict(channels=[16, 32], layers_per_block=1, attention=[False, True], norm_groups=8)
    small.update(unet)
    return dataclasses.replace(model, unet=dataclasses.replace(model.unet, **small))


def _digits(n=None):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.data / 16.0 * 2.0 - 1.0).float().reshape(-1, 1, 8, 8)
    return x if n is None else x[:n]


def test_build_net_keeps_the_mlp_for_vectors():
    cfg = load_params(ROOT / "params.yaml").model
    net = build_net(cfg, [2])
    assert isinstance(net, MLPNet)
    assert net.config == {"kind": "mlp", "dim": 2, "hidden": cfg.hidden, "depth": cfg.depth,
                          "embedding_dim": cfg.embedding_dim}
    assert net(torch.randn(5, 2), torch.rand(5)).shape == (5, 2)
    with pytest.raises(ValueError, match=r"shape \[2, 3\]"):
        build_net(cfg, [2, 3])


@pytest.mark.parametrize("shape,channels", [
    ((1, 8, 8), [16, 32]),            # digits, one down-sampling
    ((1, 8, 8), [16, 32, 32]),        # digits, two down-samplings (8 -> 4 -> 2)
    ((4, 4, 4), [16, 32]),            # latents of a factor-2 VAE
    ((4, 2, 2), [16, 32]),            # latents of a factor-4 VAE (2 -> 1)
    ((4, 2, 2), [16, 32, 32]),        # more levels than the input allows: padded to 4x4, cropped back
    ((3, 7, 5), [16, 32]),            # odd sizes: padded to 8x6
])
def test_unet_output_has_the_input_shape(shape, channels):
    net = build_net(_model_cfg(channels=channels, attention=[False] * (len(channels) - 1) + [True]), list(shape))
    assert isinstance(net, UNetNet)
    x = torch.randn(3, *shape)
    out = net(x, torch.rand(3))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert net(x, torch.rand(1)).shape == x.shape  # one level for the whole batch broadcasts


def test_unet_is_rebuilt_from_its_config_and_uses_the_noise_level():
    net = build_net(_model_cfg(), [1, 8, 8])
    cfg = json.loads(json.dumps(net.config))  # what a checkpoint stores
    assert cfg["kind"] == "unet" and cfg["channels"] == [16, 32] and cfg["attention"] == [False, True]
    twin = net_from_config(cfg)
    twin.load_state_dict(net.state_dict())
    x, c = torch.randn(4, 1, 8, 8), torch.rand(4)
    torch.testing.assert_close(twin(x, c), net(x, c))
    # c enters as the timestep 1000·c: different levels give different outputs
    assert (net(x, torch.full((4,), 0.1)) - net(x, torch.full((4,), 0.9))).abs().max() > 1e-3


def test_unet_rejects_wrong_channels():
    net = build_net(_model_cfg(), [1, 8, 8])
    with pytest.raises(ValueError, match=r"expects \(N, 1, H, W\)"):
        net(torch.randn(2, 3, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match=r"attention head size 8"):
        UNetNet(1, 8, 8, channels=[16, 20], attention=[False, False], mid_attention=True, norm_groups=4)


@pytest.mark.parametrize("unet,match", [
    ({"attention": [True]}, r"model\.unet\.attention = \[True\]: needs one true/false per level"),
    ({"channels": [16, 30]}, r"model\.unet\.channels = \[16, 30\]: every entry must be a positive multiple of "
                             r"model\.unet\.norm_groups = 16"),
    ({"channels": [], "attention": []}, r"model\.unet\.channels = \[\]"),
    ({"norm_groups": 4, "channels": [12, 20], "attention": [False, True]}, r"divisible by 8"),
    ({"norm_groups": 4, "channels": [16, 20], "attention": [False, False]}, r"mid_attention needs"),
])
def test_bad_unet_params_fail_early(unet, match):
    with pytest.raises(ConfigError, match=match):
        parse_params({"model": {"unet": unet}})


@pytest.mark.parametrize("shape", [(1, 8, 8), (4, 2, 2), (4, 4, 4)])
def test_score_model_score_has_the_input_shape(shape):
    net = build_net(_model_cfg(), list(shape))
    for process in (VPSDE(0.1, 20.0, 1e-3), NCSNLadder(0.01, 10.0, 10)):
        model = ScoreModel(net, process, prediction="eps", data_std=0.7)
        x, t = torch.randn(5, *shape), process.sample_t(5)
        for kind in ("score", "eps", "x0"):
            assert model.predict(x, t, kind).shape == x.shape


def test_losses_run_on_images_and_esm_is_refused_above_its_limit():
    torch.manual_seed(0)
    params = load_params(ROOT / "params.yaml")
    model = ScoreModel(build_net(_model_cfg(), [1, 8, 8]), VPSDE(0.1, 20.0, 1e-3), "eps", 0.7)
    x = _digits(6)
    for name in ("dsm", "eps", "ssm", "ssm_vr"):
        value = build_loss(name, params.objective, 64)(model, x, None)
        assert value.shape == (6,) and torch.isfinite(value).all(), name
        # the sliced objectives differentiate the U-Net twice (attention included)
        model.zero_grad()
        value.mean().backward()
        grads = [p.grad for p in model.net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), name
    objective = dataclasses.replace(params.objective, esm_max_dim=32)
    with pytest.raises(ConfigError, match=r"64 dimensions > objective\.esm_max_dim = 32"):
        build_loss("esm", objective, 64)


def test_a_few_training_steps_reduce_the_dsm_loss_and_the_checkpoint_reloads(tmp_path):
    from sbm.train.loop import train

    params = load_params(ROOT / "params.yaml")
    x = _digits(512)
    torch.manual_seed(0)
    model = ScoreModel(build_net(_model_cfg(), [1, 8, 8]), VPSDE(0.1, 20.0, 1e-3), "eps", float(x.std()))
    loss_fn = build_loss("dsm", params.objective, 64)

    def held_out_loss(m):  # same levels and noise before and after training
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(123)
            return float(torch.cat([loss_fn(m, x[i:i + 128], None) for i in range(0, 512, 128)]).mean())

    before = held_out_loss(model)
    cfg = dataclasses.replace(params.train, steps=60, batch_size=64, lr=2e-3, warmup_steps=5, ema_decay=0.0,
                              checkpoint_every=1000, log_every=10)
    trained, result = train(model, loss_fn, x, cfg, seed=0, ckpt_dir=tmp_path / "ckpt", progress=False)
    trained = trained.cpu()  # the loop may have used a GPU
    after = held_out_loss(trained)
    print(f"held-out DSM loss {before:.3f} -> {after:.3f}")
    assert after < 0.7 * before, (before, after)

    save_model(tmp_path / "score.safetensors", trained)
    loaded, _ = load_model(tmp_path / "score.safetensors")
    t = torch.full((4,), 0.5)
    torch.testing.assert_close(loaded.score(x[:4], t), trained.score(x[:4], t))
