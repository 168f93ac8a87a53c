"""The typed outputs of the stages: every JSON file a stage writes under reports/, as a frozen
dataclass that the stage builds and writes (`obj.write(path)`) and the report reads
(`Type.read(path)`).

The JSON layouts are the DVC metrics compared across commits and experiments (`dvc metrics
diff`, `dvc exp show`), so the keys, their order and their values are exactly those the stages
wrote before these types existed (additions: the rows of distill_detail.json, not a DVC
metrics file, say what each run is: kind, solver, full; the comparison tables draw every run
with eval.seeds sampling seeds, so their detail files hold each score as {"mean", "sd",
"values"} (`seeds.OverSeeds`) and the flat files keep the key a single value had for the mean
and add the sd under the same key + "_sd"); this module is the one place that encodes and
decodes them.
Keys formatted from values (the classifier-guidance scale in `cg_acc_s2`, the CFG weight in
`cfg_fid_w0p5`, the step count in `student_fid_4`, the noise level in `score_rel_err_l07`,
the noise quarter in `acc_q1`, the statistic over the seeds in `cg_acc_s2_sd`) each come from
one `KeyFamily`, which writes them and parses them back.

Reading is strict: a missing key, a value of the wrong type or a key the type does not know
raises `SchemaError` (a ValueError: a stage reports it in one line) naming the file and the
key. A key is optional only where a stage legitimately leaves it out (e.g. FID without an
evaluator, the accuracy of runs that are not drawn from prompts). Non-finite floats are written
as null (`sbm.io.json_safe`) and read back as NaN, so `T.read(p).write(q)` reproduces p.

A stage that was skipped writes a file that says why; its reader returns `SkippedTraining` /
`SkippedEvaluation` (or None for the empty metrics file of a skipped evaluation) instead of
the type.

| file (reports/) | stage | type |
| --- | --- | --- |
| prepare.json | prepare | `PreparedData` |
| train_evaluator.json | train_evaluator | `EvaluatorTraining` or `SkippedTraining` (no labels) |
| train_vae.json | train_vae | `VaeTraining` or `PixelSpace` |
| train_score.json | train_score | `ScoreTraining` |
| train_classifier.json | train_classifier | `ClassifierTraining` or `SkippedTraining` |
| train_text.json | train_text | `TextTraining` or `SkippedTraining` |
| distill.json | distill | `DistillTraining` |
| sample.json | sample | `SampleSummary` |
| samplers.json | compare_samplers | `SamplerComparison` (rows: `SamplerRun`) |
| metrics.json, eval_detail.json | evaluate | `EvalMetrics`, `EvalDetail` |
| guidance.json, guidance_detail.json | evaluate_guidance | `GuidanceMetrics`, `GuidanceDetail` (rows: `GuidanceRow`) |
| text.json, text_detail.json | evaluate_text | `TextMetrics`, `TextDetail` (rows: `CfgRow`, `UnseenRow`) |
| distill_eval.json, distill_detail.json | evaluate_distill | `DistillMetrics`, `DistillDetail` (rows: `DistillRun`) |

Modules: `skipped`, `prepared`, `training`, `sampling`, `evaluation` and `conditional` (the
three conditional evaluations), so a stage depends only on the types it writes; `seeds` holds
what the comparison tables share (a score over the sampling seeds, FID/KID/precision/recall
next to their floor). The flat
metrics of the conditional evaluations are a function of their detail: `GuidanceDetail.metrics()`,
`TextDetail.metrics()`, `DistillDetail.metrics()`. How a `Record` maps to JSON (plain keys,
inline records, key families) is `sbm.pipeline.records`'.
"""
