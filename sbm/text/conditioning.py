"""Text-conditional score models: captions in training, prompts in sampling, classifier-free guidance.

The model is a `sbm.core.model.ScoreModel` whose net is a `sbm.text.net.TextConditionalNet`; its condition
is a tensor of token ids (N, L) of the text encoder (`sbm.text.encoders`), so it batches, drops and
concatenates like any condition, and samplers and guidance wrappers need nothing new.

**Training** (Ho & Salimans 2022, Alg. 1, with captions as the condition). A training
example x₀ with label y gets the caption of a template k drawn uniformly per example and
step (`CaptionConditioner`), which is then replaced by the empty prompt "" with probability
p_uncond (`sbm.core.guidance.with_condition_dropout`)::

    ℓ(θ) = loss(θ; x₀, c),   c = ∅ = ids("") with probability p_uncond, else ids(template_k(y))     (1)

so one network learns the conditional ε_θ(x, t, c) and the unconditional ε_θ(x, t, ∅).

**Sampling** from prompts: `cfg(model, w)` wraps the model as ε̃ = ε_u + w (ε_c − ε_u)
(`sbm.core.guidance.ClassifierFreeGuidance`, its eq. 3) with ∅ = ids(""); w = 0 is the
unconditional model, w = 1 the conditional one. `prompt_ids` checks prompts (empty,
non-string or over-long ones raise ValueError naming the prompt) and returns their ids.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from sbm.config.prompts import CLASS_NAMES, check_templates
from sbm.core.guidance import ClassifierFreeGuidance, with_condition_dropout
from sbm.core.model import ScoreModel
from sbm.text.captions import all_captions, fill_template
from sbm.text.encoders import TextEncoder
from sbm.text.net import TextConditionalNet


def text_encoder(model) -> TextEncoder:
    """The text encoder inside a text-conditional ScoreModel; ValueError for any other model."""
    if not (isinstance(model, ScoreModel) and isinstance(model.net, TextConditionalNet)):
        raise ValueError("not a text-conditional model (its network has no text encoder); "
                         "prompts need the model of stage train_text (data/models/text.safetensors)")
    return model.net.encoder


class CaptionConditioner:
    """labels (N,) int in 0..9 -> token ids (N, L) of captions, one template drawn uniformly per
    example from torch's global generator (which the training loop seeds per step).

    table: the ids of every caption, row k·10 + y = template k filled with digit y."""

    def __init__(self, encoder: TextEncoder, templates: Sequence[str]):
        self.n_templates = len(check_templates(templates))
        self.table = encoder.token_ids(all_captions(templates))  # (T · 10, L)

    def __call__(self, labels: Tensor) -> Tensor:
        labels = labels.long().reshape(-1)
        k = torch.randint(self.n_templates, labels.shape).to(labels.device)
        self.table = self.table.to(labels.device)
        return self.table[k * len(CLASS_NAMES) + labels]


def caption_loss(loss_fn: Callable[..., Tensor], encoder: TextEncoder, templates: Sequence[str],
                 p_uncond: float) -> Callable[..., Tensor]:
    """Eq. (1) as a training objective `loss(model, x0 (N, ...), labels (N,)) -> (N,)` for `sbm.train.loop.train(..., cond=labels)`."""
    conditioner = CaptionConditioner(encoder, templates)
    dropped = with_condition_dropout(loss_fn, encoder.token_ids([""])[0], p_uncond)

    def loss(model, x0: Tensor, labels: Tensor) -> Tensor:
        if labels is None:
            raise ValueError("text-conditional training needs the class labels of the data: train(..., cond=labels)")
        return dropped(model, x0, conditioner(labels))

    return loss


def null_ids(model) -> Tensor:
    """The unconditional condition ∅ of eq. (1): the ids of the empty prompt, (L,)."""
    return text_encoder(model).token_ids([""])[0]


def prompt_ids(model, prompts: Sequence[str]) -> Tensor:
    """Checked prompts (N strings) -> their token ids (N, L) for `model`'s encoder."""
    return text_encoder(model).prompt_ids(prompts)


def cfg(model, weight: float) -> ClassifierFreeGuidance:
    """`model` under classifier-free guidance of weight w: ε̃ = ε_u + w (ε_c − ε_u), ∅ = ids("")."""
    return ClassifierFreeGuidance(model, weight, null_ids(model))


def class_prompts(labels: Sequence[int] | Tensor, templates: Sequence[str]) -> list[str]:
    """A prompt per label, the templates taken in turn (example i uses template i mod T):
    the evaluation prompts of `labels` (N,) with every template equally often."""
    templates = check_templates(templates)
    values = labels.tolist() if isinstance(labels, Tensor) else list(labels)
    return [fill_template(templates[i % len(templates)], int(y)) for i, y in enumerate(values)]
