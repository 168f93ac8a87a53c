"""Sampler comparison: quality against cost for several samplers and step counts, over sampling seeds.

`compare_samplers` runs each named sampler at each NFE budget (`settings_for_nfe`, the
`for_budget` of the sampler's `sbm.core.samplers.SamplerSpec`) on the same model and measures
NFE (network evaluations per batch), wall time per sample, the sample-to-test distances of
`sbm.eval.distances.distance_report` (sliced Wasserstein, MMD) and, with a `QualityMeter`,
FID, KID and precision/recall, so samplers can be read off one quality-vs-NFE plot.
`sample_quality` is what the conditional and distillation evaluations measure per run.

Every run is drawn once per sampling seed (`over_seeds`: the one loop over seeds) and each
score is summarised as mean ± sd over the seeds (`sbm.eval.spread`); floors (real data
against the same test split) do not depend on the seed and are kept once. `draw` is the
seeded sampling both use.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from statistics import fmean

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402
from torch import Tensor  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from sbm.config.params import SamplerParams
from sbm.core.samplers import build_sampler, initial_state, sampler_spec, schedule_for
from sbm.core.tensor import finite_rows
from sbm.eval.distances import distance_report
from sbm.eval.quality import QualityMeter
from sbm.eval.spread import summary


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


#: per-seed entries that are not scores, and how each combines over the seeds
COMBINED: dict[str, Callable[[list], object]] = {
    "nfe": max,  # the most any batch of any seed spent (draw: the most of any batch)
    "seconds_per_sample": fmean,
    "non_finite": sum,  # samples over all seeds
    "per_class": lambda rows: [fmean(c) for c in zip(*rows, strict=True)],  # per class, mean over the seeds
}


def _same(a: float, b: float) -> bool:
    """a and b equal up to float rounding (NaN equals NaN)."""
    return a == b or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9)


def over_seeds(run: Callable[[int], dict], seeds: Sequence[int]) -> dict:
    """One comparison run drawn once per sampling seed, summarised.

    run(s) draws the run's samples with seed s, scores them and returns {name: value}: scores
    (floats), floors (names ending in "_floor": real-data numbers, the same for every seed)
    and the entries of `COMBINED` (nfe, seconds_per_sample, non_finite, per_class). Returns
    {name: ...} over the k = len(seeds) runs: each score as `sbm.eval.spread.summary` of its k
    values in seed order ({"mean", "sd" (ddof = 1; absent for k = 1), "values"}), each floor once
    (ValueError if it differs between seeds), each `COMBINED` entry combined as listed. A score
    some seed lacks (e.g. no FID for a seed whose samples are not all finite) is left out."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("over_seeds: no sampling seeds")
    per_seed = [run(int(s)) for s in seeds]
    out = {}
    for name in per_seed[0]:
        if not all(name in r for r in per_seed):
            continue
        values = [r[name] for r in per_seed]
        if name in COMBINED:
            out[name] = COMBINED[name](values)
        elif name.endswith("_floor"):
            if any(not _same(v, values[0]) for v in values):
                raise ValueError(f"over_seeds: {name} differs between the sampling seeds {seeds}: {values}")
            out[name] = values[0]
        else:
            out[name] = summary(values)
    return out


def floor_of(meter: QualityMeter, reference: Tensor, n: int) -> dict[str, float]:
    """{<metric>_floor: value} of the meter's metrics for n real examples of `reference` (N, ...):
    `QualityMeter.floor`, what a perfect model scores with n samples."""
    return {f"{k}_floor": v for k, v in meter.floor(reference, n).items()}


def sample_quality(model, cfg: SamplerParams, n: int, shape, *, meter: QualityMeter, reference: Tensor,
                   seeds: Sequence[int], decode: Callable[[Tensor], Tensor] = lambda z: z,
                   labels: Tensor | None = None, cond: Tensor | None = None, evaluator=None,
                   progress: bool = False) -> dict:
    """How good one run's samples are, over the sampling seeds (`over_seeds`).

    For each seed s: n samples of `shape` with `model` (unconditional, guided or conditional:
    cond (n, ...) is what each sample is drawn for) and the sampler of `cfg`, decoded to data
    space; FID, KID, precision and recall of m = min(n, len(reference)) of them (a subset seeded
    by s) against the meter's real set, next to their floor `meter.floor(reference, m)`
    (reference: real training examples); with labels (n,) (the class each sample is drawn for)
    and the `evaluator`: accuracy = the fraction it classifies as labels, overall and per class
    (0..K−1, K = labels.max() + 1). -> {accuracy, per_class (with labels), fid, kid, precision,
    recall (each {"mean", "sd", "values"}), fid_floor, kid_floor, precision_floor, recall_floor,
    nfe, seconds_per_sample}."""
    if labels is not None and len(labels) != n:
        raise ValueError(f"sample_quality: {len(labels)} labels for {n} samples")
    if labels is not None and evaluator is None:
        raise ValueError("sample_quality: labels need the evaluator that classifies the samples")
    m = min(n, len(reference))
    floor = floor_of(meter, reference, m)

    def run(seed: int) -> dict:
        z, nfe, seconds = draw(model, cfg, n, shape, cond=cond, seed=seed, progress=progress)
        x = decode(z)
        out = {}
        if labels is not None:
            pred = evaluator.predict(x)
            out["accuracy"] = float((pred == labels).double().mean())
            out["per_class"] = [float((pred[labels == c] == c).double().mean()) for c in range(int(labels.max()) + 1)]
        subset = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:m]
        return {**out, **meter(x[subset]), **floor, "nfe": nfe, "seconds_per_sample": seconds / n}

    return over_seeds(run, seeds)


def settings_for_nfe(base: SamplerParams, name: str, nfe: int, native_levels: int) -> SamplerParams:
    """`base` with sampler `name` set to spend about (at most) `nfe` network evaluations per batch:
    `SamplerSpec.for_budget` of the sampler (`sbm.core.samplers.SAMPLERS`: the NFE table is there);
    native_levels: the length of the process's native grid. ode_adaptive sets its own NFE
    through rtol/atol and keeps `base`'s."""
    return sampler_spec(name).for_budget(dataclasses.replace(base, name=name), nfe, native_levels)


def conditional_sampler_params(base: SamplerParams, name: str | None, nfe: int, model) -> SamplerParams:
    """The sampler settings of the conditional evaluations (params eval.conditional_sampler and
    conditional_nfe): `base` (params `sampler`) as it is when name is None, else `base` with
    sampler `name` at about `nfe` network evaluations per sample on `model`'s process
    (`settings_for_nfe`)."""
    if name is None:
        return base
    return settings_for_nfe(base, name, nfe, len(model.process.grid()))


def compare_samplers(
    model, base: SamplerParams, names: list[str], budgets: list[int], *, test: Tensor, reference: Tensor,
    n: int, n_projections: int = 256, data_range=None, seed: int = 0, seeds: Sequence[int] | None = None,
    progress: bool = True, shape=None, decode: Callable[[Tensor], Tensor] | None = None,
    quality: QualityMeter | None = None,
) -> list[dict]:
    """One row per (sampler, NFE budget), each run drawn with every sampling seed of `seeds`
    (default: `seed` alone), n samples per seed: sampler, budget, nfe (actual, the most of any
    seed), steps, seconds_per_sample (mean over the seeds), non_finite (over all seeds), and when
    every sample of every seed is finite swd, mmd (over the seeds: {"mean", "sd", "values"}, see
    `over_seeds`) next to swd_floor, mmd_floor (real training points `reference` vs test, the
    subsets and projections of `seed`: one value); with `quality` (a meter against the test
    split) also fid, kid, precision, recall over the seeds next to their floor
    `quality.floor(reference, n)`.

    shape: what the model samples (default test's example shape; latents for a latent model);
    decode: samples -> data space before they are measured (a latent model's decoder).
    A sampler whose NFE its solver picks (`SamplerSpec.nfe` None: ode_adaptive, set by rtol/atol)
    runs once, with budget None."""
    seeds = (seed,) if seeds is None else tuple(seeds)
    rows = []
    native = len(model.process.grid())
    # name -> whether its NFE follows the budget (an unknown name fails here, before any work)
    budgeted = {name: sampler_spec(name).nfe(dataclasses.replace(base, name=name), native) is not None
                for name in names}
    floor = {} if quality is None else floor_of(quality, reference, n)
    runs = [(name, b) for name in names for b in (budgets if budgeted[name] else budgets[:1])]
    for name, budget in tqdm(runs, desc="sampler comparison", disable=not progress):
        cfg = dataclasses.replace(settings_for_nfe(base, name, budget, native), batch_size=min(base.batch_size, n))

        def run(s: int, cfg: SamplerParams = cfg) -> dict:
            x, nfe, seconds = draw(model, cfg, n, tuple(shape or test.shape[1:]), data_range=data_range, seed=s)
            finite = finite_rows(x)
            out = {"nfe": nfe, "seconds_per_sample": seconds / n, "non_finite": int((~finite).sum())}
            if finite.all():
                x = decode(x) if decode is not None else x
                if quality is not None:
                    out.update({**quality(x), **floor})
                d = distance_report(x, test, reference, n_points=n, n_projections=n_projections, seed=seed)
                out.update({k: d[k] for k in ("swd", "swd_floor", "mmd", "mmd_floor")})
            return out

        scores = over_seeds(run, seeds)
        rows.append({"sampler": name, "budget": budget if budgeted[name] else None, "nfe": scores.pop("nfe"),
                     "steps": cfg.steps, "seconds_per_sample": scores.pop("seconds_per_sample"),
                     "non_finite": scores.pop("non_finite"), **scores})
    return rows
