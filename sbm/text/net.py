"""The text-conditional network, and loading score models that may hold one.

A `TextConditionalNet` wraps an unconditional backbone (`sbm.nets.score`) with a text
encoder (`sbm.text.encoders`); `text_net_from_config` rebuilds it or any unconditional net
from a config, and `load_text_model` loads a score checkpoint with either.
"""

from __future__ import annotations

from torch import Tensor, nn

from sbm.models.score import load_model
from sbm.nets.score import net_from_config
from sbm.text.encoders import TextEncoder, text_encoder_from_config


class SharedRef:
    """A reference that copies share: `copy.deepcopy` returns the holder itself. A module held
    this way is no submodule: it is in no `parameters()`, `state_dict()` or `.to()`, so a frozen
    pretrained encoder is stored by name only and every copy of the net (the trainer's working
    copy, the EMA model, distillation students) reads the one instance."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __deepcopy__(self, memo: dict) -> "SharedRef":
        return self


class TextConditionalNet(nn.Module):
    """A text-conditional network: (x, c (N,), ids (N, L) int64) -> shaped like x.

    ids are token ids of the text encoder (`encoder.token_ids(prompts)`, `sbm.text.encoders`); the
    encoder maps them to tokens (N, L, D) and a mask (N, L), which the backbone reads: a
    `UNetNet` with context_dim = D cross-attends to them (images, latents: the
    latent-diffusion recipe, Rombach et al. 2022), an `MLPNet` adds their pooled mean to
    its noise embedding (vectors).

    A trainable encoder (scratch) is a submodule: trained jointly with the backbone, saved
    in its checkpoint. A frozen pretrained one is held outside the module tree: it is not in
    the state_dict (so never in the score checkpoint, the optimizer or the EMA) and is
    rebuilt from its config (name or path) when the checkpoint is loaded.

    backbone: an unconditional net's config (`UNetNet`/`MLPNet`, e.g. `build_net(...).config`);
    encoder: a `sbm.text.encoders.TextEncoder` or its config. `config` rebuilds the net."""

    conditional = True

    def __init__(self, backbone: dict, encoder):
        super().__init__()
        if not isinstance(encoder, TextEncoder):
            encoder = text_encoder_from_config(encoder)
        backbone = {k: v for k, v in backbone.items() if k != "context_dim"}
        if backbone.get("kind") not in ("unet", "mlp"):
            raise ValueError(f"text-conditional backbone must be a unet or an mlp, got {backbone.get('kind')!r}")
        self.backbone = net_from_config({**backbone, "context_dim": encoder.dim})
        if encoder.trainable:
            self.add_module("encoder", encoder)  # a submodule: trained, saved (encoder.*), in the EMA
        else:
            self.frozen_encoder = SharedRef(encoder)
        self.config = {"kind": "text", "backbone": backbone, "encoder": encoder.config}

    @property
    def encoder(self) -> TextEncoder:
        """The text encoder: the trainable submodule, or the frozen one all copies share."""
        return self._modules["encoder"] if "encoder" in self._modules else self.frozen_encoder.value

    def forward(self, x: Tensor, c: Tensor, ids: Tensor | None = None) -> Tensor:
        if ids is None:
            raise ValueError("a text-conditional model needs a condition: token ids (N, L) of the prompts, or of the "
                             "empty prompt \"\" for the unconditional score (encoder.token_ids)")
        if ids.shape[0] != x.shape[0]:
            raise ValueError(f"{ids.shape[0]} conditions for a batch of {x.shape[0]}")
        tokens, mask = self.encoder.encode_ids(ids.to(x.device))
        return self.backbone(x, c, tokens, mask)


def text_net_from_config(cfg: dict) -> nn.Module:
    """Rebuild a network from its `config`: a `TextConditionalNet` (kind "text") or any
    unconditional architecture (`sbm.nets.score.net_from_config`)."""
    if cfg.get("kind") == "text":
        cfg = dict(cfg)
        cfg.pop("kind")
        return TextConditionalNet(**cfg)
    return net_from_config(cfg)


def load_text_model(path):
    """A score model from `sbm.models.score.save_model`'s file whose net may be text-conditional
    -> (model in eval mode, meta). Raises io.CheckpointError naming the file."""
    return load_model(path, text_net_from_config)
