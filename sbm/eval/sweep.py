"""Sampler comparison: quality against cost for several samplers and step counts.

`compare_samplers` runs each named sampler at each NFE budget (`settings_for_nfe`, the
`for_budget` of the sampler's `sbm.core.samplers.SamplerSpec`) on the
same model, from the same seed, and measures NFE (network evaluations per batch), wall time per sample and
the sample-to-test distances of `sbm.eval.distances.distance_report` (sliced Wasserstein, MMD),
so samplers can be read off one quality-vs-NFE plot. `Measured`/`load_measured`, `draw` and
`conditional_quality` are what the evaluation stages share; `skip_evaluation` is what they
write when their inputs were skipped (data without labels).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402
from torch import Tensor  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from sbm.config.params import SamplerParams
from sbm.core.samplers import build_sampler, initial_state, sampler_spec, schedule_for
from sbm.core.tensor import finite_rows
from sbm.eval.distances import distance_report
from sbm.eval.quality import fid


def draw(model, cfg: SamplerParams, n: int, shape, *, data_range=None, seed: int = 0, progress: bool = False,
         cond: Tensor | None = None):
    """n samples of `shape` with the sampler of `cfg`, in batches of cfg.batch_size, seeded:
    (x (n, *shape), NFE per batch, total sampling seconds). cond: (n, ...) conditions (e.g.
    the class of each sample for a guided model), sliced with the batches; None: unconditional."""
    if cond is not None and len(cond) != n:
        raise ValueError(f"draw: {len(cond)} conditions for {n} samples")
    g = torch.Generator().manual_seed(seed)
    sampler = build_sampler(cfg)
    schedule = schedule_for(cfg, model.process)
    chunks, nfe, seconds = [], 0, 0.0
    for start in range(0, n, cfg.batch_size):
        b = min(cfg.batch_size, n - start)
        x_T = initial_state(cfg, model.process, (b, *shape), data_range=data_range, generator=g)
        out = sampler(model, x_T, schedule, generator=g, progress=progress,
                      cond=None if cond is None else cond[start:start + b])
        chunks.append(out.x)
        nfe, seconds = max(nfe, out.nfe), seconds + out.wall_time_s
    return torch.cat(chunks), nfe, seconds


def conditional_quality(model, cfg: SamplerParams, labels: Tensor, cond: Tensor, shape, *, evaluator,
                        test: Tensor, n_fid: int, decode: Callable[[Tensor], Tensor] = lambda z: z, seed: int = 0,
                        progress: bool = False) -> dict:
    """Conditional samples and how well they follow their condition.

    Draws one sample per row of cond (N, ...) (the class, or the prompt ids, each sample is
    drawn for) with `model` (a guided or conditional model) and the sampler of `cfg`, decodes
    them and measures: accuracy = the fraction the `evaluator` classifies as labels (N,),
    overall and per class (0..K−1, K = labels.max() + 1); FID of n_fid of them (a seeded
    subset) against `test`; NFE (model calls per batch) and seconds per sample.
    -> {accuracy, per_class, fid, nfe, seconds_per_sample}."""

    z, nfe, seconds = draw(model, cfg, len(labels), shape, cond=cond, seed=seed, progress=progress)
    x = decode(z)
    pred = evaluator.predict(x)
    per_class = [float((pred[labels == c] == c).double().mean()) for c in range(int(labels.max()) + 1)]
    subset = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n_fid]
    return {"accuracy": float((pred == labels).double().mean()), "per_class": per_class,
            "fid": fid(test, x[subset], evaluator), "nfe": nfe, "seconds_per_sample": seconds / len(x)}


def settings_for_nfe(base: SamplerParams, name: str, nfe: int, native_levels: int) -> SamplerParams:
    """`base` with sampler `name` set to spend about (at most) `nfe` network evaluations per batch:
    `SamplerSpec.for_budget` of the sampler (`sbm.core.samplers.SAMPLERS`: the NFE table is there);
    native_levels: the length of the process's native grid. ode_adaptive sets its own NFE
    through rtol/atol and keeps `base`'s."""
    return sampler_spec(name).for_budget(dataclasses.replace(base, name=name), nfe, native_levels)


def compare_samplers(
    model, base: SamplerParams, names: list[str], budgets: list[int], *, test: Tensor, reference: Tensor,
    n: int, n_projections: int = 256, data_range=None, seed: int = 0, progress: bool = True,
    shape=None, decode: Callable[[Tensor], Tensor] | None = None,
    quality: Callable[[Tensor], dict] | None = None,
) -> list[dict]:
    """One row per (sampler, NFE budget): sampler, budget, nfe (actual), steps, seconds_per_sample,
    swd, swd_floor, mmd, mmd_floor, non_finite. n samples per run, same seed.

    shape: what the model samples (default test's example shape; latents for a latent model);
    decode: samples -> data space before they are measured (a latent model's decoder);
    quality: data-space samples -> extra row entries (e.g. FID and its floor).
    A sampler whose NFE its solver picks (`SamplerSpec.nfe` None: ode_adaptive, set by rtol/atol)
    runs once, with budget None."""
    rows = []
    native = len(model.process.grid())
    # name -> whether its NFE follows the budget (an unknown name fails here, before any work)
    budgeted = {name: sampler_spec(name).nfe(dataclasses.replace(base, name=name), native) is not None
                for name in names}
    runs = [(name, b) for name in names for b in (budgets if budgeted[name] else budgets[:1])]
    for name, budget in tqdm(runs, desc="sampler comparison", disable=not progress):
        cfg = dataclasses.replace(settings_for_nfe(base, name, budget, native), batch_size=min(base.batch_size, n))
        x, nfe, seconds = draw(model, cfg, n, tuple(shape or test.shape[1:]), data_range=data_range, seed=seed)
        finite = finite_rows(x)
        row = {"sampler": name, "budget": budget if budgeted[name] else None, "nfe": nfe,
               "steps": cfg.steps, "seconds_per_sample": seconds / n, "non_finite": int((~finite).sum())}
        if finite.all():
            x = decode(x) if decode is not None else x
            if quality is not None:
                row.update(quality(x))
            d = distance_report(x, test, reference, n_points=n, n_projections=n_projections, seed=seed)
            row.update({k: d[k] for k in ("swd", "swd_floor", "mmd", "mmd_floor")})
        rows.append(row)
    return rows


