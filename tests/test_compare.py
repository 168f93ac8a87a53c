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
