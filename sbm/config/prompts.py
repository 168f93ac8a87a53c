"""The rules of user text, shared by params validation and the text layer (pure Python).

A caption template is a string with {digit} (the numeral) and/or {name} (the word) and no
other placeholder; a prompt is a non-empty string of at most `max_tokens` token positions,
counted by the encoder in use (word-level + [CLS] by default). Unseen phrasings are allowed.
`CLASS_NAMES` and `DEFAULT_TEMPLATES` are the digits' words and the default caption
templates: params' `text.templates` defaults to them, and the scratch encoder's vocabulary
is built from them.
"""

from __future__ import annotations

import re
import string
from typing import Callable, Sequence

CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: caption templates used when params name none
DEFAULT_TEMPLATES = ("a handwritten {name}", "the digit {digit}", "a picture of the number {name}", "{digit}")

PLACEHOLDERS = ("digit", "name")


def show(value: object, width: int = 60) -> str:
    """repr(value) cut to `width` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def check_templates(templates: Sequence[str]) -> list[str]:
    """Validate caption templates -> them as a list.

    Each must be a string using at least one of {digit} / {name} and no other placeholder;
    otherwise ValueError naming the template."""
    if isinstance(templates, str) or not isinstance(templates, Sequence) or len(templates) == 0:
        raise ValueError(f"caption templates: expected a non-empty list of strings, got {show(templates)}")
    out = []
    for i, t in enumerate(templates):
        if not isinstance(t, str):
            raise ValueError(f"caption template {i} ({show(t)}) is not a string")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(t) if f is not None]
        except ValueError as err:
            raise ValueError(f"caption template {i} ({show(t)}) is malformed: {err}") from err
        unknown = [f for f in fields if f not in PLACEHOLDERS]
        if unknown:
            raise ValueError(f"caption template {i} ({show(t)}) has unknown placeholder(s) "
                             f"{', '.join('{' + f + '}' for f in unknown)}; allowed are {{digit}} and {{name}}")
        if not fields:
            raise ValueError(f"caption template {i} ({show(t)}) has no placeholder; "
                             f"it needs {{digit}} (the numeral) or {{name}} (the word)")
        out.append(t)
    return out


def word_tokens(text: str) -> list[str]:
    """The scratch encoder's tokenisation: lowercase, split on anything not a letter or digit.

    "The digit 7!" -> ["the", "digit", "7"]."""
    return re.findall(r"[a-z0-9]+", text.lower())


def word_count(prompt: str) -> int:
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
        raise ValueError(f"prompts: expected a list of strings, got {type(prompts).__name__} {show(prompts)}"
                         + ("; wrap a single prompt in a list" if isinstance(prompts, str) else ""))
    count = tokenizer or word_count
    out = []
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ValueError(f"prompt {i} ({show(p)}) is a {type(p).__name__}; every prompt must be a string")
        if not p.strip() and not (allow_empty and p == ""):
            raise ValueError(f"prompt {i} ({show(p)}) is empty or whitespace only; a prompt needs some text "
                             f"(the unconditional case is the encoder's null(), not an empty prompt)")
        n = count(p)
        if n > max_tokens:
            raise ValueError(f"prompt {i} ({show(p)}) is {n} tokens long, more than the encoder's maximum of "
                             f"{max_tokens} (max_length); shorten it or raise max_length")
        out.append(p)
    return out
