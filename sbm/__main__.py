"""Command line: `python -m sbm <command>`.

  compare   write reports/compare.md: the DVC experiments' params and metrics side by side
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="sbm", description="score-based generative modelling pipeline")
    sub = ap.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="compare DVC experiments into a markdown report")
    cmp.add_argument("--out", default="reports/compare.md")
    cmp.add_argument("--repo", default=None, help="DVC repository (default: the current one)")
    cmp.add_argument("--print", action="store_true", help="also print the report")
    args = ap.parse_args(argv)

    if args.command == "compare":
        from .compare import write_report

        text = write_report(args.out, args.repo)
        print(text if args.print else f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
