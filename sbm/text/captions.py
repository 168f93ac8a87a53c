"""Captions: a digit label y ∈ {0..9} becomes a caption by filling one template (pure Python).

A template is picked uniformly per example from a list, e.g. "a handwritten {name}" → "a
handwritten seven"; `{digit}` is the numeral ("7"), `{name}` the word ("seven"). The pick is
drawn from a `torch.Generator`, so the same labels, templates and seed give the same
captions. The rules a template or prompt must follow are `sbm.config.prompts`'.
"""

from __future__ import annotations

import operator
from typing import Sequence

import torch

from sbm.config.prompts import CLASS_NAMES, DEFAULT_TEMPLATES, check_templates, show


def fill_template(template: str, label: int) -> str:
    """One caption: `template` with {digit} = str(label) and {name} = CLASS_NAMES[label]."""
    return template.format(digit=str(label), name=CLASS_NAMES[label])


def captions(labels: "torch.Tensor | Sequence[int]", templates: Sequence[str] = DEFAULT_TEMPLATES,
             generator: "torch.Generator | None" = None) -> list[str]:
    """One caption per label (N,) ints in 0..9, each from a template drawn uniformly with `generator`.

    -> list of N strings. Deterministic given the generator's state (torch's global RNG if None)."""
    templates = check_templates(templates)
    values = labels.reshape(-1).tolist() if isinstance(labels, torch.Tensor) else list(labels)
    labels = []
    for i, y in enumerate(values):
        try:
            y = operator.index(y) if not isinstance(y, bool) else None
        except TypeError:
            y = None
        if y is None or not 0 <= y < len(CLASS_NAMES):
            raise ValueError(f"captions: label {i} is {show(values[i])}; labels must be ints in "
                             f"0..{len(CLASS_NAMES) - 1}")
        labels.append(y)
    picks = torch.randint(len(templates), (len(labels),), generator=generator).tolist()
    return [fill_template(templates[k], y) for k, y in zip(picks, labels)]


def all_captions(templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[str]:
    """Every caption the templates can make: each template × each digit (the scratch vocabulary's source)."""
    return [fill_template(t, y) for t in check_templates(templates) for y in range(len(CLASS_NAMES))]
