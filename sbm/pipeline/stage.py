"""What every DVC stage script shares: argument parsing defaults and error reporting.

`run_stage(name, main)` runs `main()`; the errors a user can cause (bad params, missing
or malformed data, unreadable checkpoints, a training run that cannot go on) end the
process with exit status 2 and one line on stderr naming what is wrong — no traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from sbm.errors import CheckpointError, ConfigError, TrainingError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, CheckpointError, TrainingError, FileNotFoundError, ValueError,
)


def stage_parser(doc: str | None, **paths: str) -> argparse.ArgumentParser:
    """An argument parser with --params (default params.yaml) and one --<name> option per
    keyword, defaulting to the pipeline's layout (underscores become dashes), so tests and
    users can point a stage at other files."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    for name, default in paths.items():
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, default=default, help=f"default: {default}")
    return ap


def run_stage(name: str, main: Callable[[], object]) -> None:
    """Run `main()`; user errors exit 2 with one line. A torch.distributed process group a
    training stage started (under `accelerate launch`) is destroyed on the way out."""
    try:
        main()
    except USER_ERRORS as err:
        message = " ".join(str(err).split())  # one line, whatever the library wrote
        print(f"{name}: error: {message}", file=sys.stderr)
        sys.exit(2)
    finally:
        dist = sys.modules.get("torch.distributed")  # only if torch was imported at all
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


