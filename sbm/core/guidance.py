"""Guidance as model wrappers: samplers see a model with the usual ``score/eps/x0/predict``
methods and ``.process``, and need no change (they know nothing of guidance).

With x_t = α x₀ + σ ε and score = −ε/σ (`sbm.models.score`, eq. 1):

**Classifier guidance** (Song et al. 2021, sec. 5 "controllable generation", eq. 14;
Dhariwal & Nichol 2021, sec. 4, Alg. 1–2 with the gradient scale s). Bayes' rule at every
noise level, ∇ₓ log p_t(x | y) = ∇ₓ log p_t(x) + ∇ₓ log p_t(y | x), with a scale s::

    s̃(x, t, y) = s_θ(x, t) + s · ∇ₓ log p_φ(y | x, t)                                  (1)
    ε̃(x, t, y) = −σ s̃ = ε_θ(x, t) − s · σ ∇ₓ log p_φ(y | x, t)                          (2)

(2) is Dhariwal & Nichol's ε̂ = ε_θ − √(1−ᾱ_t) ∇ log p_φ(y | x_t) for DDIM (sec. 4.2), here
times s. s = 1 with the exact p_t(y | x) gives the exact conditional score ∇ log p_t(x | y);
s > 1 gives the score of p_t(x) p_t(y | x)^s (sharper classes). The gradient is taken by
autograd, under `torch.enable_grad()` so it works inside the samplers' `no_grad`; it is
returned detached (guided sampling is not differentiated through).

**Classifier-free guidance** (Ho & Salimans 2022, eq. 6). One conditional model, trained
with its condition replaced by a null condition ∅ with probability p_uncond (`drop_condition`),
gives both ε_c = ε_θ(x, t, c) and ε_u = ε_θ(x, t, ∅)::

    ε̃ = ε_u + w (ε_c − ε_u)                                                             (3)

Ho & Salimans write (1 + w') ε_c − w' ε_u: the same with w = 1 + w'. w = 1 is the conditional
model, w = 0 the unconditional one, w > 1 extrapolates away from ε_u. Since score = −ε/σ at
the same (x, t) and (3) is affine with weights summing to one, it is the same rule on scores::

    s̃ = −ε̃/σ = −ε_u/σ + w(−ε_c/σ + ε_u/σ) = s_u + w (s_c − s_u)                        (4)
       = ∇ log p_t(x) + w ∇ log p_t(c | x)   (an implicit classifier, cf. eq. 1 with s = w)

and likewise on x̂₀ = (x − σ ε̃)/α = x̂₀_u + w (x̂₀_c − x̂₀_u).

**The null condition** is whatever the conditional model reads as "no condition": a tensor
holding one example's condition (e.g. the extra label K for labels (N,), or a zero or
empty-prompt embedding (L, D) for embeddings (N, L, D)), the same with a leading 1, a whole
batch shaped like `cond`, or a callable ``n -> (n, ...)`` (`null_batch`).
"""

from __future__ import annotations

from typing import Callable, Union

import torch
from torch import Tensor, nn

from sbm.core.model import Predicts, from_eps, to_eps
from sbm.core.tensor import bcast, per_example

NullCond = Union[Tensor, int, float, Callable[[int], Tensor]]


def null_batch(null_cond: NullCond, n: int, like: Tensor | None = None) -> Tensor:
    """The null condition for a batch of n, (n, ...), on `like`'s device and in its dtype.

    null_cond: one example's condition (shape like[1:]), a (1, ...) tensor, a batch shaped
    like `like`, or a callable n -> (n, ...). Without `like` a tensor is one example's condition."""
    if callable(null_cond) and not isinstance(null_cond, Tensor):
        out = null_cond(n)
    else:
        out = torch.as_tensor(null_cond)
        example = None if like is None else tuple(like.shape[1:])
        if like is not None and out.shape == like.shape:
            pass
        elif example is None or tuple(out.shape) == example:
            out = out.expand(n, *out.shape)
        elif out.dim() == like.dim() and out.shape[0] == 1 and tuple(out.shape[1:]) == example:
            out = out.expand(n, *example)
        else:
            raise ValueError(f"null condition of shape {tuple(out.shape)} does not fit conditions of shape "
                             f"{tuple(like.shape)}: give one example's {example}, (1, *{example}) or the whole batch")
    if like is not None:
        out = out.to(device=like.device, dtype=like.dtype)
    if out.shape[0] != n:
        raise ValueError(f"null condition batch has {out.shape[0]} rows, need {n}")
    return out


def drop_condition(cond: Tensor, null_cond: NullCond, p_uncond: float,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Classifier-free guidance training dropout (Ho & Salimans 2022, Alg. 1): each example's
    condition is replaced by the null condition with probability p_uncond, independently.

    cond: (N, ...) (labels (N,), embeddings (N, L, D), ...). -> (cond with the dropped rows
    equal to the null condition (N, ...), mask (N,) bool, True = dropped). The coin flips are
    drawn on the CPU from `generator` (the global one if None)."""
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond = {p_uncond}: must be in [0, 1]")
    cond = torch.as_tensor(cond)
    n = cond.shape[0]
    mask = (torch.rand(n, generator=generator) < p_uncond).to(cond.device)
    null = null_batch(null_cond, n, like=cond)
    return torch.where(bcast(mask, cond), null, cond), mask


def with_condition_dropout(loss_fn: Callable[..., Tensor], null_cond: NullCond, p_uncond: float):
    """`loss_fn(model, x, cond)` trained on `drop_condition(cond, ...)`: the CFG training
    objective, usable as `sbm.train.loop.train(model, with_condition_dropout(...), data, cfg, cond=c)`.
    The coin flips come from the global generator, which the training loop seeds per step."""
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond = {p_uncond}: must be in [0, 1]")

    def loss(model, x: Tensor, cond: Tensor) -> Tensor:
        if cond is None:
            raise ValueError("classifier-free guidance training needs conditions: train(..., cond=...)")
        return loss_fn(model, x, drop_condition(cond, null_cond, p_uncond)[0])

    return loss


class GuidedModel(Predicts, nn.Module):
    """Base of the wrappers: `predict(x, t, kind, cond)` is the one method to implement;
    score/eps/x0 follow (`sbm.core.model.Predicts`), `.process` is the wrapped model's.
    x (N, ...), t (N,) or scalar."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.process = model.process

    def predict(self, x: Tensor, t: Tensor, kind: str, cond=None) -> Tensor:
        raise NotImplementedError


def _labels(cond, n: int, device) -> Tensor:
    """The class of each example, (n,) int64, from an int, a 0-d or an (n,) tensor."""
    if cond is None:
        raise ValueError("classifier guidance needs the class to guide towards: cond = y (an int or (N,) labels)")
    y = torch.as_tensor(cond, device=device).long()
    return y.reshape(()).expand(n) if y.numel() == 1 else y.reshape(n)


class ClassifierGuidance(GuidedModel):
    """Eq. (1)–(2): `model`'s score plus `scale` · ∇ₓ log p(y | x, t) of a noise-conditional
    `classifier` (anything with `log_prob(x, t, y) -> (N,)`, e.g. `sbm.models.classifier.NoisyClassifier`).

    cond (the samplers' `cond`) is the class y: an int or (N,) labels. The wrapped model is
    unconditional and gets cond=None, unless `conditional_model` (guiding a class-conditional
    model with its own label, as Dhariwal & Nichol's best results do): then it gets y too.
    Each example's log p(y | x, t) must depend on its own x only (true for per-example
    networks), so one backward pass of their sum gives every example's gradient."""

    def __init__(self, model, classifier, scale: float, *, conditional_model: bool = False):
        super().__init__(model)
        self.classifier = classifier
        self.scale = float(scale)
        self.conditional_model = bool(conditional_model)

    def classifier_grad(self, x: Tensor, t: Tensor, cond) -> Tensor:
        """∇ₓ log p(y | x, t), shaped like x (detached)."""
        y = _labels(cond, x.shape[0], x.device)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = self.classifier.log_prob(xg, t, y)
            (grad,) = torch.autograd.grad(logp.sum(), xg)
        return grad.to(x.dtype)

    def predict(self, x: Tensor, t: Tensor, kind: str, cond=None) -> Tensor:
        t = per_example(t, x.shape[0], x.device)
        score = self.model.score(x, t, cond if self.conditional_model else None)
        if self.scale != 0:
            score = score + self.scale * self.classifier_grad(x, t, cond)
        a, s = self.process.marginal(t)
        return from_eps(to_eps(score, x, a, s, "score"), x, a, s, kind).to(x.dtype)


class ClassifierFreeGuidance(GuidedModel):
    """Eq. (3): ε̃ = ε_u + w(ε_c − ε_u) from one conditional model, ε_c = model.eps(x, t, cond),
    ε_u = model.eps(x, t, ∅); score and x̂₀ follow by eq. (4).

    cond: any (N, ...) tensor the model understands (an int or 0-d tensor is repeated over
    the batch); cond=None gives the unconditional ε_u. null_cond: see `null_batch`.
    batched: evaluate both in one model call on the concatenated (2N, ...) batch (the
    model must accept a batch of conditions); w = 0 and w = 1 need one evaluation only."""

    def __init__(self, model, weight: float, null_cond: NullCond, *, batched: bool = True):
        super().__init__(model)
        self.weight = float(weight)
        self.null_cond = null_cond
        self.batched = bool(batched)

    def guided_eps(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        """ε̃ of eq. (3), shaped like x; t: (N,)."""
        n = x.shape[0]
        if cond is not None:
            cond = torch.as_tensor(cond, device=x.device)
            cond = cond.expand(n) if cond.dim() == 0 else cond
        if cond is None or self.weight == 0:
            return self.model.eps(x, t, null_batch(self.null_cond, n, like=cond).to(x.device))
        if self.weight == 1:
            return self.model.eps(x, t, cond)
        null = null_batch(self.null_cond, n, like=cond)
        if self.batched:
            eps_c, eps_u = self.model.eps(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null])).chunk(2)
        else:
            eps_c, eps_u = self.model.eps(x, t, cond), self.model.eps(x, t, null)
        return eps_u + self.weight * (eps_c - eps_u)

    def predict(self, x: Tensor, t: Tensor, kind: str, cond=None) -> Tensor:
        t = per_example(t, x.shape[0], x.device)
        a, s = self.process.marginal(t)
        return from_eps(self.guided_eps(x, t, cond), x, a, s, kind).to(x.dtype)
