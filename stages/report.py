"""DVC stage `report`: reports/report.md from the outputs of the other stages.

Reads reports/{prepare,sample,train_score,metrics,eval_detail}.json, the dvclive loss
curve and reports/samples.png — whichever exist (a missing one skips its section with a
note); writes reports/report.md and reports/loss.png. Renders offline (sbm.report).
"""

from __future__ import annotations

import argparse

from sbm.report import ReportInputs, build_report
from sbm.stage import run_stage


def main(argv: list[str] | None = None) -> str:
    d = ReportInputs()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in d.__dataclass_fields__:
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, default=str(getattr(d, name)))
    args = ap.parse_args(argv)
    inp = ReportInputs(**vars(args))
    text = build_report(inp)
    n_skipped = text.count("_Skipped")
    print(f"report: wrote {inp.out}" + (f" ({n_skipped} section(s) skipped: inputs absent)" if n_skipped else ""))
    return text


if __name__ == "__main__":
    run_stage("report", main)
