"""sbm.pipeline.outputs: the typed stage outputs keep the JSON layout of reports/ exactly (keys, order,
ints and floats), the formatted metric keys are written and parsed by one family each, and a file
that does not fit names itself and the key."""

import json
import math

import pytest

from sbm import io
from sbm.eval.spread import summary
from sbm.pipeline.outputs.conditional import (
    CFG_KEY,
    DISTILL_RUN_KEY,
    GUIDANCE_KEY,
    UNSEEN_KEY,
    CfgRow,
    DistillDetail,
    DistillMetrics,
    DistillRun,
    GuidanceDetail,
    GuidanceMetrics,
    GuidanceRow,
    SampleScores,
    TextDetail,
    TextMetrics,
    UnseenRow,
)
from sbm.pipeline.outputs.evaluation import SCORE_LEVEL_KEY, EvalDetail, EvalMetrics
from sbm.pipeline.outputs.sampling import SamplerComparison, SampleSummary
from sbm.pipeline.outputs.seeds import MeanSd, OverSeeds
from sbm.pipeline.outputs.skipped import SkippedEvaluation, SkippedTraining
from sbm.pipeline.outputs.training import ClassifierTraining, EvaluatorTraining, PixelSpace, VaeTraining
from sbm.pipeline.records import SchemaError

SETTINGS = {"divergence": "hutchinson", "probe": "rademacher", "n_probes": 1, "rtol": 1e-05, "atol": 1e-05,
            "batch_size": 500}
# metrics.json of a mixture run (pixel space, ODE NLL with the exact NLL) and of a latent image run
MIXTURE_METRICS = {"n_samples": 400, "n_eval": 250, "swd": 2.1, "swd_floor": 0.8, "swd_ratio": 2.625, "mmd": 0.3,
                   "mmd_floor": -0.001, "score_rel_err_mean": 1.5, "score_rel_err_max": 3.0, "score_mse_mean": 7.0,
                   "weight_err_max": 0.05, "weight_tv": 0.05, "logp_samples": -9.0, "logp_test": -4.0, "logp_gap": 5.0,
                   "score_rel_err_l00": 1.0, "score_rel_err_l01": 2.0, "score_rel_err_l02": 1.5, "nll": 4.1,
                   "nll_nfe": 86.0, "nll_exact": 4.0, "nll_gap": 0.1}
LATENT_METRICS = {"n_samples": 2000, "n_eval": 359, "swd": 0.08, "swd_floor": 0.06, "swd_ratio": None, "mmd": 0.008,
                  "mmd_floor": -0.001, "fid": 3.5, "fid_floor": 2.1, "fid_ratio": 1.65, "kid": 0.05, "kid_floor": 0.01,
                  "precision": 0.7, "precision_floor": 0.85, "recall": 0.8, "recall_floor": 0.86, "evaluator_acc": 0.99,
                  "class_tv": 0.04, "bpd_bound": 4.3, "bpd_bound_iwae": 4.29, "nll_bound": 57.7, "bound_rec": 22.1,
                  "bound_kl": 35.6, "nll_nfe": 356.0}
LATENT_DETAIL = {
    "data": {"name": "digits", "shape": [1, 8, 8], "n_train": 1438, "n_test": 359},
    "samples": {"file": "data/samples/samples.safetensors", "n": 2000, "sampler": "euler_maruyama", "nfe": 50,
                "wall_time_s": 9.4},
    "distances": {"n": 359, "swd": 0.08, "swd_floor": 0.06, "swd_ratio": None, "mmd": 0.008, "mmd_floor": -0.001,
                  "mmd_bandwidths": [3.0, 6.0, 12.0]},
    "evaluator": {"n_fid": 1438, "n_test": 359, "class_counts": [1] * 10, "train_class_freq": [0.1] * 10,
                  "fid": 3.5, "fid_floor": 2.1, "fid_ratio": 1.65, "kid": 0.05, "kid_floor": 0.01,
                  "precision": 0.7, "precision_floor": 0.85, "recall": 0.8, "recall_floor": 0.86, "evaluator_acc": 0.99, "class_tv": 0.04},
    "likelihood": {**SETTINGS, "n": 359, "bound": True, "bound_samples": 1, "dequantized": True, "bin_width": 0.125,
                   "bpd_bound": 4.3, "bpd_bound_iwae": 4.29, "nll_bound": 57.7, "bound_rec": 22.1, "bound_kl": 35.6,
                   "nll_nfe": 356.0}}
MIXTURE_DETAIL = {
    "data": {"name": "gmm", "shape": [2], "n_train": 600, "n_test": 300},
    "samples": {"file": "samples.safetensors", "n": 400, "sampler": "annealed_langevin", "nfe": None,
                "wall_time_s": None},
    "distances": {"n": 250, "swd": 2.1, "swd_floor": 0.8, "swd_ratio": 2.625, "mmd": 0.3, "mmd_floor": -0.001,
                  "mmd_bandwidths": [1.0]},
    "score_levels": [{"t": 1.0, "alpha": 1.0, "sigma": 12.0, "mse": 1.0, "score_sq": 0.5, "rel_err": 2.0}],
    "weights": {"true": [0.6, 0.4], "recovered": [0.5, 0.5], "means": [[-4.0, -4.0], [4.0, 4.0]]},
    "logp": {"samples": -9.0, "test": -4.0},
    "likelihood": {**SETTINGS, "n": 40, "batches": 2, "dequantized": False, "bin_width": None, "nll": 4.1,
                   "nll_nfe": 86.0, "nll_exact": 4.0, "nll_gap": 0.1}}


def _same(obj, d: dict) -> None:
    """obj's JSON is d, keys in the same order (what `dvc metrics diff` and git diffs see)."""
    assert json.dumps(obj.to_json()) == json.dumps(d)


@pytest.mark.parametrize("cls,d", [(EvalMetrics, MIXTURE_METRICS), (EvalMetrics, LATENT_METRICS),
                                   (EvalDetail, LATENT_DETAIL), (EvalDetail, MIXTURE_DETAIL)],
                         ids=["mixture", "latent", "latent-detail", "mixture-detail"])
def test_evaluate_outputs_round_trip_exactly(cls, d):
    _same(cls.from_json(d), d)


def test_the_metrics_are_typed_and_families_are_tuples():
    m = EvalMetrics.from_json(MIXTURE_METRICS)
    assert m.mixture.score_rel_err_levels == (1.0, 2.0, 1.5) and m.evaluator is None and m.bound is None
    assert m.likelihood.nll == 4.1 and m.likelihood.bpd is None and m.likelihood.nll_exact == 4.0
    latent = EvalMetrics.from_json(LATENT_METRICS)
    assert latent.likelihood is None and latent.bound.bpd_bound_iwae == 4.29 and latent.swd_ratio is None
    detail = EvalDetail.from_json(LATENT_DETAIL)
    assert detail.likelihood.bound_samples == 1 and detail.evaluator.scores.fid == 3.5 and detail.mixture is None


def test_ints_stay_ints_and_non_finite_floats_come_back_as_nan(tmp_path):
    d = {"sampler": "ddim", "space": "latent", "n": 2000, "nfe": 50, "wall_time_s": 2, "seconds_per_sample": 0.001}
    s = SampleSummary.from_json(d)
    assert s.wall_time_s == 2 and isinstance(s.wall_time_s, int)  # a number, kept as written
    _same(s, d)
    nan = SampleSummary(sampler="ddim", space="pixel", n=2, nfe=1, wall_time_s=float("nan"), seconds_per_sample=0.5)
    nan.write(tmp_path / "s.json")
    assert io.read_json(tmp_path / "s.json")["wall_time_s"] is None  # JSON has no NaN
    back = SampleSummary.read(tmp_path / "s.json")
    assert math.isnan(back.wall_time_s)
    back.write(tmp_path / "t.json")
    assert (tmp_path / "t.json").read_text() == (tmp_path / "s.json").read_text()


def test_key_families_write_and_parse_the_same_keys():
    assert [GUIDANCE_KEY.key("acc", s, "mean") for s in (0.0, 0.5, 2.0, 12.25)] == [
        "cg_acc_s0", "cg_acc_s0p5", "cg_acc_s2", "cg_acc_s12p25"]
    assert GUIDANCE_KEY.key("fid", 0.5, "sd") == "cg_fid_s0p5_sd" and GUIDANCE_KEY.parse("cg_fid_s0p5_sd") == (
        "fid", 0.5, "sd")
    assert CFG_KEY.key("fid", 4.0, "mean") == "cfg_fid_w4" and CFG_KEY.parse("cfg_fid_w0p5") == ("fid", 0.5, "mean")
    for key in ("cfg_fid_floor", "cfg_unseen_acc", "cfg_acc_wx", "cfg_acc_w2_sd_sd", "cfg_acc_w2sd"):
        assert CFG_KEY.parse(key) is None, key
    assert UNSEEN_KEY.parse("cfg_unseen_acc_sd") == ("sd",) and UNSEEN_KEY.key("mean") == "cfg_unseen_acc"
    assert SCORE_LEVEL_KEY.key(7) == "score_rel_err_l07" and SCORE_LEVEL_KEY.parse("score_rel_err_mean") is None
    assert DISTILL_RUN_KEY.key("teacher", "fid", None, "mean") == "teacher_fid_full"
    assert DISTILL_RUN_KEY.key("student", "fid", 4, "sd") == "student_fid_4_sd"
    assert DISTILL_RUN_KEY.parse("teacher_heun_acc_2") == ("teacher_heun", "acc", 2, "mean")
    assert DISTILL_RUN_KEY.parse("teacher_fid_full_sd") == ("teacher", "fid", None, "sd")
    assert DISTILL_RUN_KEY.parse("student_over_teacher_fid_4") is None


def _over(*values: float) -> dict:
    """The JSON of a score over seeds: mean, sd (n − 1; absent for one value), values."""
    return summary(values)


def _quality(fid: float, spread: float = 0.0, seeds: int = 2) -> dict:
    """FID, KID, precision, recall over `seeds` seeds (FID values fid ± spread) and their floors."""
    vals = [fid + spread * (i - (seeds - 1) / 2) for i in range(seeds)]
    return {"fid": _over(*vals), "kid": _over(*(v / 100 for v in vals)), "precision": _over(*[0.75] * seeds),
            "recall": _over(*[0.5] * seeds), "fid_floor": 2.0, "kid_floor": 0.01, "precision_floor": 0.875,
            "recall_floor": 0.875}


def _scores(acc: float, fid: float, seeds: int = 2) -> SampleScores:
    return SampleScores.from_json({"accuracy": _over(*[acc] * seeds), "per_class": [acc] * 2,
                                   **_quality(fid, 1.0, seeds), "nfe": 10, "seconds_per_sample": 0.01})


def test_a_score_over_seeds_is_the_mean_and_sd_of_its_values():
    """values (2, 4, 9): mean 5, sd (n − 1) √13; one seed: no sd key. A file whose mean or sd is not that
    of its values, or that has no values, is refused naming the key."""
    v = OverSeeds.from_json({"mean": 5.0, "sd": math.sqrt(13.0), "values": [2.0, 4.0, 9.0]})
    assert (v.mean, v.sd, v.values) == (5.0, math.sqrt(13.0), (2.0, 4.0, 9.0))
    assert summary([2.0, 4.0, 9.0]) == {"mean": 5.0, "sd": math.sqrt(13.0), "values": [2.0, 4.0, 9.0]}
    assert summary([3.5]) == {"mean": 3.5, "values": [3.5]} and OverSeeds.of([3.5]).sd is None
    assert f"{v:.3g}" == "5 ± 3.6" and f"{OverSeeds.of([3.5]):.3g}" == "3.5"
    for bad, why in (({"mean": 5.5, "sd": math.sqrt(13.0), "values": [2.0, 4.0, 9.0]}, "not those of the values"),
                     ({"mean": 5.0, "sd": 3.0, "values": [2.0, 4.0, 9.0]}, "not those of the values"),
                     ({"mean": 5.0, "values": [2.0, 4.0, 9.0]}, "not those of the values"),  # sd left out
                     ({"mean": 5.0, "sd": 0.0, "values": [5.0]}, "not those of the values"),  # an sd of one seed
                     ({"mean": 5.0, "values": []}, "no values")):
        with pytest.raises(SchemaError, match=rf"rows\[0\]\.fid .*{why}"):
            GuidanceDetail.from_json({"n_per_class": 1, "sampler": "ddim", "seeds": [0, 1, 2], "rows": [
                {"method": "classifier", "scale": 0.0, **_scores(0.5, 3.0, 3).to_json(), "fid": bad}]})


def test_every_score_of_a_table_has_one_value_per_seed():
    rows = [GuidanceRow(scale=0.0, scores=_scores(0.1, 5.0, seeds=2))]
    assert GuidanceDetail(n_per_class=5, sampler="ddim", seeds=(0, 1), rows=tuple(rows)).seeds == (0, 1)
    with pytest.raises(ValueError, match=r"rows\[0\]\.scores\.accuracy: 2 values for 3 seeds"):
        GuidanceDetail(n_per_class=5, sampler="ddim", seeds=(0, 1, 2), rows=tuple(rows))
    with pytest.raises(ValueError, match="all distinct"):
        GuidanceDetail(n_per_class=5, sampler="ddim", seeds=(0, 0), rows=tuple(rows))


@pytest.mark.parametrize("seeds", [2, 1], ids=["two-seeds", "one-seed"])
def test_guidance_and_text_metrics_are_their_details_flat_keys(seeds):
    """The flat files keep the keys a single FID had, now the means over the seeds, each followed by its
    sd under "..._sd" (sd = 1/√2 of FID values f ± 0.5, 0 for the constant accuracy); one seed: no _sd key."""
    gd = GuidanceDetail(n_per_class=5, sampler="ddim", seeds=tuple(range(seeds)), rows=tuple(
        GuidanceRow(scale=s, scores=_scores(a, f, seeds)) for s, a, f in ((0.0, 0.1, 5.0), (0.5, 0.6, 4.0))))
    sd = {"acc": 0.0, "fid": math.sqrt(0.5)} if seeds > 1 else None
    plus = (lambda k, m: {k: m, f"{k}_sd": sd[k.split("_")[1]]}) if sd else (lambda k, m: {k: m})
    want = {"cg_fid_floor": 2.0, **plus("cg_acc_s0", 0.1), **plus("cg_fid_s0", 5.0), **plus("cg_acc_s0p5", 0.6),
            **plus("cg_fid_s0p5", 4.0)}
    _same(gd.metrics(), want)
    _same(GuidanceMetrics.from_json(want), want)
    assert GuidanceMetrics.from_json(want).scores[1].strength == 0.5
    assert GuidanceMetrics.from_json(want).scores[1].fid == MeanSd(mean=4.0, sd=sd["fid"] if sd else None)
    _same(GuidanceDetail.from_json(gd.to_json()), gd.to_json())
    text = {"cfg_fid_floor": 2.5, "cfg_acc_w0": 0.1, "cfg_fid_w0": 9.0, "cfg_acc_w2": 1.0, "cfg_fid_w2": 2.0,
            "cfg_unseen_acc": 0.9}
    _same(TextMetrics.from_json(text), text)
    with_sd = {"cfg_fid_floor": 2.5, "cfg_acc_w0": 0.1, "cfg_acc_w0_sd": 0.01, "cfg_fid_w0": 9.0, "cfg_fid_w0_sd": 1.5,
               "cfg_unseen_acc": 0.9, "cfg_unseen_acc_sd": 0.05}
    _same(TextMetrics.from_json(with_sd), with_sd)


def test_text_metrics_average_the_unseen_phrasings_per_seed():
    """cfg_unseen_acc: per seed the mean over the phrasings ((0.8 + 1.0)/2, (0.6 + 1.0)/2 = 0.9, 0.8), then their
    mean 0.85 and sd √0.005."""
    def row(scale: float, **kw) -> dict:
        return {"method": "cfg", "scale": scale, **kw, **_quality(3.0, 1.0), "nfe": 10, "seconds_per_sample": 0.01}

    detail = {"n_per_class": 5, "sampler": "ddim", "encoder": "minilm", "weight": 2.0, "seeds": [0, 1], "rows": [
        row(w, templates="training", accuracy=_over(a, a), per_class=[a], network_evals_per_call=n)
        for w, a, n in ((0.0, 0.1, 1), (2.0, 1.0, 2))], "unseen": [
        row(2.0, template=t, accuracy=_over(*a), per_class=[sum(a) / 2]) for t, a in (("{digit}!", (0.8, 0.6)),
                                                                                       ("the {name}", (1.0, 1.0)))]}
    # the rows' keys in the order the schema writes them
    detail["rows"] = [CfgRow.from_json(r).to_json() for r in detail["rows"]]
    detail["unseen"] = [UnseenRow.from_json(r).to_json() for r in detail["unseen"]]
    td = TextDetail.from_json(detail)
    _same(td, detail)
    m = td.metrics().to_json()
    assert list(m) == ["cfg_fid_floor", "cfg_acc_w0", "cfg_acc_w0_sd", "cfg_fid_w0", "cfg_fid_w0_sd", "cfg_acc_w2",
                       "cfg_acc_w2_sd", "cfg_fid_w2", "cfg_fid_w2_sd", "cfg_unseen_acc", "cfg_unseen_acc_sd"]
    assert m["cfg_unseen_acc"] == pytest.approx(0.85) and m["cfg_unseen_acc_sd"] == pytest.approx(math.sqrt(0.005))
    assert m["cfg_fid_w2"] == 3.0 and m["cfg_fid_w2_sd"] == pytest.approx(math.sqrt(0.5))
    _same(TextMetrics.from_json(m), m)


def test_flat_metrics_have_every_sd_or_none():
    for d, cls in (({"cg_fid_floor": 2.0, "cg_acc_s0": 0.1, "cg_acc_s0_sd": 0.01, "cg_fid_s0": 5.0}, GuidanceMetrics),
                   ({"fid_floor": 2.0, "teacher_fid_full": 4.0, "teacher_fid_full_sd": 0.1, "student_fid_2": 5.0},
                    DistillMetrics),
                   ({"cfg_fid_floor": 2.5, "cfg_acc_w0": 0.1, "cfg_fid_w0": 9.0, "cfg_unseen_acc": 0.9,
                     "cfg_unseen_acc_sd": 0.05}, TextMetrics)):
        with pytest.raises(SchemaError, match="some scores have their _sd key and others not"):
            cls.from_json(d)
    with pytest.raises(SchemaError, match="missing key 'cg_fid_s0'"):
        GuidanceMetrics.from_json({"cg_fid_floor": 2.0, "cg_acc_s0": 0.1, "cg_fid_s0_sd": 0.5})
    with pytest.raises(SchemaError, match="teacher_nfe_full_sd is not a key of DistillMetrics"):
        DistillMetrics.from_json({"fid_floor": 2.0, "teacher_fid_full": 4.0, "teacher_nfe_full": 50,
                                  "teacher_nfe_full_sd": 1})


def _distill_rows(accuracy: bool, seeds: int = 2) -> list[dict]:
    """distill_detail.json rows: the full teacher (FID 4), and at 1 and 2 steps teacher DDIM (9), Heun (20) and
    the student (5), each FID over `seeds` seeds ± 1; 10 ms per sample for the full teacher, 1 ms for the others."""
    acc = (lambda a: {"accuracy": _over(*[a] * seeds), "per_class": [a, a]}) if accuracy else (lambda a: {})
    return [{"sampler": "teacher euler_maruyama (full)", "steps": 49, **acc(0.99), **_quality(4.0, 1.0, seeds),
             "nfe": 50, "seconds_per_sample": 0.01, "kind": "teacher", "solver": "euler_maruyama", "full": True}] + [
        {"sampler": label, "steps": n, **acc(0.9), **_quality(f, 1.0, seeds), "nfe": n + 1,
         "seconds_per_sample": 0.001, "kind": kind, "solver": solver, "full": False}
        for n in (1, 2) for label, kind, solver, f in (("teacher ddim", "teacher", "ddim", 9.0),
                                                       ("teacher ode_heun", "teacher", "ode_heun", 20.0),
                                                       ("student (consistency)", "student", "consistency", 5.0))]


@pytest.mark.parametrize("text", [False, True], ids=["score-teacher", "text-teacher"])
@pytest.mark.parametrize("seeds", [2, 1], ids=["two-seeds", "one-seed"])
def test_distill_metrics_come_from_the_rows_kinds_not_their_names(text, seeds):
    detail = {"n": 40, "method": "consistency", "teacher": "text" if text else "score", "guidance": 2.0 if text else None,
              "student_steps": 2, "teacher_sampler": "euler_maruyama", "teacher_steps": 50,
              "seeds": list(range(seeds)), "rows": _distill_rows(text, seeds)}
    dd = DistillDetail.from_json(detail)
    _same(dd, detail)
    assert dd.reference.steps == 49 and dd.find("student", 2).fid.mean == 5.0
    assert dd.find("teacher", 1, "ode_heun").nfe == 2 and dd.reference.seconds_per_1000 == 10.0
    m = dd.metrics().to_json()
    keys = ["fid_floor", "teacher_fid_full", *(["teacher_fid_full_sd"] if seeds > 1 else []),
            *(["teacher_acc_full", *(["teacher_acc_full_sd"] if seeds > 1 else [])] if text else []),
            "teacher_nfe_full"]
    for n in (1, 2):
        for run in ("teacher_ddim", "teacher_heun", "student"):
            for metric in ("fid", "acc") if text else ("fid",):
                keys += [f"{run}_{metric}_{n}", *([f"{run}_{metric}_{n}_sd"] if seeds > 1 else [])]
    assert list(m) == [*keys, "speedup_2", "student_over_teacher_fid_2"]
    assert m["speedup_2"] == pytest.approx(10.0) and m["student_over_teacher_fid_2"] == 5.0 / 4.0
    assert m["teacher_nfe_full"] == 50 and m["student_fid_2"] == 5.0
    if seeds > 1:
        assert m["student_fid_2_sd"] == pytest.approx(math.sqrt(0.5)) and (not text or m["student_acc_2_sd"] == 0.0)
    _same(DistillMetrics.from_json(m), m)
    relabelled = {**detail, "rows": [{**r, "sampler": f"run {i}"} for i, r in enumerate(detail["rows"])]}
    assert DistillDetail.from_json(relabelled).metrics().to_json() == m  # labels are for people only


def test_skipped_stages_read_as_their_variant(tmp_path):
    SkippedEvaluation(reason="train_classifier was skipped: no labels").write(tmp_path / "gd.json")
    assert io.read_json(tmp_path / "gd.json") == {"skipped": "train_classifier was skipped: no labels", "rows": []}
    assert GuidanceDetail.read(tmp_path / "gd.json") == SkippedEvaluation(reason="train_classifier was skipped: no labels")
    SkippedEvaluation(reason="x").write_metrics(tmp_path / "g.json")
    assert GuidanceMetrics.read(tmp_path / "g.json") is None and DistillMetrics.read(tmp_path / "g.json") is None
    for cls in (ClassifierTraining, EvaluatorTraining):
        SkippedTraining(reason="no labels").write(tmp_path / "t.json")
        assert cls.read(tmp_path / "t.json") == SkippedTraining(reason="no labels")
    SkippedTraining().write(tmp_path / "e.json")
    assert io.read_json(tmp_path / "e.json") == {"trained": False}  # train_evaluator's: the reason is in none.json
    PixelSpace().write(tmp_path / "v.json")
    assert VaeTraining.read(tmp_path / "v.json") == PixelSpace()


def test_a_file_that_does_not_fit_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "metrics.json"
    io.write_json(path, {k: v for k, v in LATENT_METRICS.items() if k != "mmd_floor"})
    with pytest.raises(SchemaError, match=r"metrics\.json: missing key 'mmd_floor'"):
        EvalMetrics.read(path)
    io.write_json(path, {**LATENT_METRICS, "fid": "3.5"})
    with pytest.raises(SchemaError, match=r"metrics\.json: fid = '3\.5': expected a number"):
        EvalMetrics.read(path)
    io.write_json(path, {**LATENT_METRICS, "fid_typo": 1.0})
    with pytest.raises(SchemaError, match=r"fid_typo is not a key of EvalMetrics"):
        EvalMetrics.read(path)
    io.write_json(path, {k: v for k, v in LATENT_METRICS.items() if not k.startswith(("bpd", "nll", "bound"))})
    with pytest.raises(SchemaError, match="exactly one"):
        EvalMetrics.read(path)
    rows = _distill_rows(False)
    del rows[2]["kind"]
    io.write_json(path, {"n": 4, "method": "progressive", "teacher": "score", "guidance": None, "student_steps": 2,
                         "teacher_sampler": "ddim", "teacher_steps": 9, "seeds": [0, 1], "rows": rows})
    with pytest.raises(SchemaError, match=r"missing key 'kind' in rows\[2\]"):
        DistillDetail.read(path)
    io.write_json(path, {"n": 4, "metric": "fid", "seeds": [0], "rows": [{"sampler": "ddim"}]})
    with pytest.raises(SchemaError, match=r"samplers?.*missing key 'budget' in rows\[0\]|missing key 'budget'"):
        SamplerComparison.read(path)
    assert issubclass(SchemaError, ValueError)  # a stage reports it in one line (sbm.pipeline.stage)


def test_a_teacher_run_at_a_step_count_names_its_solver():
    with pytest.raises(ValueError, match="ddim or ode_heun"):
        DistillRun(label="teacher pc", steps=2, scores=_scores(0.5, 1.0), kind="teacher", solver="pc", full=False)
