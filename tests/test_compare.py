"""sbm.pipeline.experiments: the experiments table (params that differ + scalar metrics, best marked)."""

import pandas as pd

from sbm.pipeline.experiments import _row, summarize, to_markdown


def _exp(name, loss, weight, fid):
    return _row(name, name, {
        "params": {"params.yaml": {"data": {"loss": loss, "text": {"weight": weight}}}},
        "metrics": {"reports/metrics.json": {"data": {"fid": fid}},
                    "reports/text.json": {"data": {"weight": weight, "cfg_unseen_acc": 1.0 - fid / 10}}}})


def test_params_and_metrics_with_the_same_name_stay_apart_and_the_best_is_marked():
    table, best = summarize(pd.DataFrame([_exp("a", "dsm", 2.0, 4.0), _exp("b", "ssm", 3.0, 5.0)]))
    assert list(table.columns) == ["name", "rev", "loss", "text.weight", "fid", "text.weight (metric)",
                                   "text.cfg_unseen_acc"]
    assert best == {"fid": 0, "text.cfg_unseen_acc": 0}  # lower FID, higher accuracy: row a
    md = to_markdown(table, best)
    assert "**4**" in md and "**0.6**" in md and "| ssm " in md


def test_kid_precision_recall_are_ranked_and_an_sd_shows_in_its_metric_cell(monkeypatch, tmp_path):
    """metrics.json's KID (lower), precision and recall (higher) are ranked like FID; guidance.json's
    cg_fid_s2_sd is no column of its own but the "± sd" of cg_fid_s2; the page says each row's
    metrics.json is one sample set."""
    from sbm.pipeline import experiments

    def exp(name, fid, kid, precision, recall, cg, sd):
        return _row(name, name, {
            "params": {"params.yaml": {"data": {"loss": "dsm"}}},
            "metrics": {"reports/metrics.json": {"data": {"fid": fid, "kid": kid, "precision": precision,
                                                          "recall": recall}},
                        "reports/guidance.json": {"data": {"cg_fid_s2": cg, "cg_fid_s2_sd": sd}}}})

    df = pd.DataFrame([exp("a", 4.0, 0.02, 0.7, 0.6, 3.5, 0.25), exp("b", 5.0, 0.01, 0.8, 0.5, 4.25, 0.5)])
    table, best = summarize(df)
    assert best == {"fid": 0, "kid": 1, "precision": 1, "recall": 0}
    md = to_markdown(table, best)
    header = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
    assert header == ["name", "rev", "loss", "fid", "kid", "precision", "recall", "guidance.cg_fid_s2"]
    assert "| 3.5 ± 0.25 " in md and "| 4.25 ± 0.5 " in md and "**0.01**" in md and "**0.8**" in md
    monkeypatch.setattr(experiments, "collect", lambda repo=None: df)
    text = experiments.write_report(tmp_path / "compare.md", repo=str(tmp_path))
    assert experiments.ONE_SAMPLE_SET in text and "| 3.5 ± 0.25 " in text
