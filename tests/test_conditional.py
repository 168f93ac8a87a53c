"""Text-conditional score models (sbm.text.net.TextConditionalNet, sbm.text.conditioning): token ids as the
condition, frozen encoders kept out of checkpoints, caption dropout at rate p_uncond, classifier-free
guidance on prompts, and a small model that learns to follow its captions."""

import math

import pytest
import torch

from sbm import io
from sbm.config.prompts import CLASS_NAMES
from sbm.core.gmm import GaussianMixture
from sbm.core.model import ScoreModel
from sbm.core.processes import VESDE, VPSDE
from sbm.models.score import save_model
from sbm.nets.score import MLPNet, UNetNet
from sbm.text.captions import all_captions
from sbm.text.conditioning import (
    CaptionConditioner,
    caption_loss,
    cfg,
    class_prompts,
    null_ids,
    prompt_ids,
    text_encoder,
)
from sbm.text.encoders import build_text_encoder
from sbm.text.net import TextConditionalNet, load_text_model

pytestmark = pytest.mark.usefixtures("one_thread")

TEMPLATES = ["a handwritten {name}", "the digit {digit}"]


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder("minilm", max_length=16)


def _scratch(dim=16):
    torch.manual_seed(0)
    return build_text_encoder("scratch", max_length=8, scratch_dim=dim, scratch_layers=1, scratch_heads=2,
                              vocab_source=TEMPLATES)


def _unet_model(encoder, process=None):
    torch.manual_seed(0)
    backbone = UNetNet(4, 4, 4, channels=[16, 32], layers_per_block=1, attention=[False, True]).config
    return ScoreModel(TextConditionalNet(backbone, encoder), process or VPSDE(), "eps")


# --------------------------------------------------------------------------- the network


def test_the_condition_changes_the_output_and_each_row_reads_only_its_own_prompt():
    model = _unet_model(_scratch())
    x, t = torch.randn(3, 4, 4, 4), torch.full((3,), 0.5)
    ids = prompt_ids(model, ["a handwritten seven", "the digit 2", "a handwritten seven"])
    with torch.no_grad():
        out = model.eps(x[[0, 0, 0]], t, ids)
        alone = model.eps(x[1:2], t[1:2], ids[1:2])
    assert out.shape == (3, 4, 4, 4)
    assert torch.equal(out[0], out[2])  # same x, same prompt
    assert (out[0] - out[1]).abs().max() > 1e-4  # same x, another prompt
    with torch.no_grad():
        assert torch.allclose(model.eps(x[:2], t[:2], ids[:2])[1], model.eps(x[1:2], t[1:2], ids[1:2])[0], atol=1e-5)
    assert alone.shape == (1, 4, 4, 4)


def test_a_text_model_without_a_condition_says_what_it_needs():
    model = _unet_model(_scratch())
    with pytest.raises(ValueError, match="needs a condition: token ids"):
        model.eps(torch.randn(2, 4, 4, 4), torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="3 conditions for a batch of 2"):
        model.eps(torch.randn(2, 4, 4, 4), torch.full((2,), 0.5), prompt_ids(model, ["1", "2", "3"]))


def test_scratch_model_round_trips_through_its_checkpoint(tmp_path):
    model = _unet_model(_scratch())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_model(tmp_path / "text.safetensors", model, extra={"data_shape": [4, 4, 4]})
    back, meta = load_text_model(tmp_path / "text.safetensors")
    x, t = torch.randn(2, 4, 4, 4), torch.full((2,), 0.3)
    ids = prompt_ids(model, ["a handwritten four", "the digit 4"])
    with torch.no_grad():
        assert torch.allclose(model.eval().eps(x, t, ids), back.eps(x, t, ids), atol=1e-6)
    assert text_encoder(back).vocab == text_encoder(model).vocab  # the tokenizer travels with the weights
    assert any(k.startswith("net.encoder.") for k in io.load_tensors(tmp_path / "text.safetensors")[0])


def test_a_frozen_encoder_is_not_trained_saved_or_averaged(minilm, tmp_path):
    model = _unet_model(minilm)
    names = [n for n, _ in model.net.named_parameters()]
    assert names and not any(n.startswith("encoder.") for n in names)
    assert not any(k.startswith("encoder.") for k in model.net.state_dict())
    save_model(tmp_path / "text.safetensors", model, extra={"data_shape": [4, 4, 4]})
    tensors, meta = io.load_tensors(tmp_path / "text.safetensors")
    assert sum(v.numel() for v in tensors.values()) == sum(p.numel() for p in model.net.parameters())
    assert meta["model"]["net"]["encoder"] == {"kind": "pretrained", "name_or_path": "minilm", "max_length": 16}
    back, _ = load_text_model(tmp_path / "text.safetensors")  # rebuilt from the installed package, offline
    x, t, ids = torch.randn(2, 4, 4, 4), torch.full((2,), 0.7), prompt_ids(model, ["a handwritten one", "a 9"])
    with torch.no_grad():
        assert torch.allclose(model.eps(x, t, ids), back.eps(x, t, ids), atol=1e-6)


def test_copies_share_a_frozen_encoder_and_copy_a_trainable_one(minilm):
    """Distillation and the EMA deep-copy text models: a frozen MiniLM (no trained state) is
    shared, everything trained is copied, and the copy computes the same outputs."""
    import copy

    x, t = torch.randn(2, 4, 4, 4), torch.full((2,), 0.4)
    for encoder, shared in ((minilm, True), (_scratch(), False)):
        model = _unet_model(encoder)
        clone = copy.deepcopy(model)
        assert (clone.net.encoder is model.net.encoder) == shared
        assert all(a.data_ptr() != b.data_ptr() for a, b in zip(model.net.parameters(), clone.net.parameters()))
        ids = prompt_ids(model, ["a handwritten one", "the digit 2"])
        with torch.no_grad():
            assert torch.equal(model.eps(x, t, ids), clone.eps(x, t, ids))


def test_pretrained_ids_mark_padding_and_memoised_encodings_equal_fresh_ones(minilm):
    ids = minilm.token_ids(["the digit seven", "", "the digit seven"])
    mask = ids >= 0
    assert ids.shape == (3, 16) and mask[1].sum() == 2  # "" is [CLS] [SEP]
    assert torch.equal(ids[0], ids[2]) and (ids[~mask] == -1).all()
    minilm._memo.clear()
    tokens, m = minilm.encode_ids(ids)
    assert len(minilm._memo) == 2  # each distinct row encoded once
    fresh = build_text_encoder("minilm", max_length=16)
    t2, m2 = fresh.encode(["the digit seven", "", "the digit seven"])
    assert torch.equal(m, m2) and torch.allclose(tokens, t2, atol=1e-6)
    with pytest.raises(ValueError, match=r"integer \(N, 16\) tensor"):
        minilm.encode_ids(torch.zeros(2, 8, dtype=torch.long))


def test_vector_backbone_pools_the_tokens():
    torch.manual_seed(0)
    encoder = _scratch()
    net = TextConditionalNet(MLPNet(2, 32, 2, 16).config, encoder)
    model = ScoreModel(net, VESDE(0.01, 5.0))
    ids = prompt_ids(model, ["a handwritten one", "the digit 0"])
    with torch.no_grad():
        out = model.eps(torch.zeros(2, 2), torch.full((2,), 0.5), ids)
    assert out.shape == (2, 2) and (out[0] - out[1]).abs().max() > 1e-5


# --------------------------------------------------------------------------- captions and dropout


def test_caption_conditioner_draws_every_template_for_the_right_digit():
    encoder = _scratch()
    cond = CaptionConditioner(encoder, TEMPLATES)
    labels = torch.tensor([3, 7] * 2000)
    torch.manual_seed(1)
    ids = cond(labels)
    table = {tuple(r): c for r, c in zip(encoder.token_ids(all_captions(TEMPLATES)).tolist(), all_captions(TEMPLATES))}
    texts = [table[tuple(r)] for r in ids.tolist()]
    assert all(CLASS_NAMES[y] in t or str(y) in t for y, t in zip(labels.tolist(), texts))
    first = sum(t.startswith("a handwritten") for t in texts) / len(texts)
    assert abs(first - 0.5) < 3 * math.sqrt(0.25 / len(texts))


def test_caption_loss_shows_the_empty_prompt_at_rate_p_uncond():
    encoder, seen = _scratch(), []

    def spy(model, x, cond):
        seen.append(cond)
        return x.sum(1)

    loss = caption_loss(spy, encoder, TEMPLATES, p_uncond=0.2)
    torch.manual_seed(0)
    n = 20000
    out = loss(None, torch.ones(n, 2), torch.randint(10, (n,)))
    assert out.shape == (n,)
    null = encoder.token_ids([""])[0]
    rate = (seen[0] == null).all(1).double().mean().item()
    assert abs(rate - 0.2) < 3 * math.sqrt(0.2 * 0.8 / n)
    with pytest.raises(ValueError, match="needs the class labels"):
        loss(None, torch.ones(2, 2), None)


def test_class_prompts_cycle_through_the_templates():
    assert class_prompts([1, 1, 2], TEMPLATES) == ["a handwritten one", "the digit 1", "a handwritten two"]


# --------------------------------------------------------------------------- classifier-free guidance


def test_cfg_on_a_text_model_is_eps_u_plus_w_times_the_difference():
    model = _unet_model(_scratch())
    x, t = torch.randn(4, 4, 4, 4), torch.rand(4) * 0.9 + 0.05
    ids = prompt_ids(model, ["the digit 1", "the digit 2", "a handwritten three", "the digit 4"])
    with torch.no_grad():
        eps_c = model.eps(x, t, ids)
        eps_u = model.eps(x, t, null_ids(model).expand(4, -1))
        for w in (0.0, 1.0, 3.0):
            assert torch.allclose(cfg(model, w).eps(x, t, ids), eps_u + w * (eps_c - eps_u), atol=1e-5)


def test_prompts_are_checked_before_sampling(minilm):
    model = _unet_model(minilm)
    for bad, match in (([""], "empty"), (["   "], "empty"), ([7], "not a string|is a int"),
                       (["seven " * 20], "tokens long")):
        with pytest.raises(ValueError, match=match):
            prompt_ids(model, bad)
    assert prompt_ids(model, ["the number seven written by hand"]).shape == (1, 16)  # unseen phrasing: allowed
    with pytest.raises(ValueError, match="not a text-conditional model"):
        prompt_ids(ScoreModel(MLPNet(2, 8, 1, 8), VPSDE()), ["a seven"])


# --------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_a_small_text_model_learns_to_follow_its_captions(tmp_path):
    """Two far-apart Gaussian classes labelled 0 and 1: after a short training with caption dropout,
    samples drawn for "the digit 1" land in class 1's component (conditional, w = 1), and CFG with
    w = 3 does so for both prompts; the unconditional branch (w = 0) draws both classes."""
    from sbm.config.params import SamplerParams, TrainParams
    from sbm.core.losses import dsm_loss
    from sbm.eval.sweep import draw
    from sbm.train.loop import train

    mix = GaussianMixture([0.5, 0.5], [[-3.0, 0.0], [3.0, 0.0]], [[[0.25, 0.0], [0.0, 0.25]]] * 2)
    x, y = mix.sample(4000, generator=torch.Generator().manual_seed(0))
    encoder = _scratch()
    model = ScoreModel(TextConditionalNet(MLPNet(2, 64, 2, 16).config, encoder), VESDE(0.01, 8.0), "eps", 3.0)
    cfg_train = TrainParams(steps=600, batch_size=256, lr=3e-3, warmup_steps=20, checkpoint_every=600, log_every=100)
    ema, _ = train(model, caption_loss(dsm_loss, encoder, TEMPLATES, 0.2), x, cfg_train, seed=0,
                   ckpt_dir=tmp_path / "ckpt", cond=y, progress=False)
    sampler = SamplerParams(name="euler_maruyama", n_samples=400, batch_size=400, steps=100)
    side = {}
    for w in (0.0, 1.0, 3.0):
        for digit in (0, 1):
            ids = prompt_ids(ema, [f"the digit {digit}"]).expand(400, -1)
            with torch.no_grad():
                s, _, _ = draw(cfg(ema, w), sampler, 400, (2,), cond=ids, seed=1)
            side[w, digit] = (s[:, 0] > 0).double().mean().item()  # fraction in class 1's half
    assert 0.25 < side[0.0, 0] < 0.75 and 0.25 < side[0.0, 1] < 0.75  # unconditional: both classes
    assert side[1.0, 1] > 0.85 and side[1.0, 0] < 0.15
    assert side[3.0, 1] > 0.95 and side[3.0, 0] < 0.05
