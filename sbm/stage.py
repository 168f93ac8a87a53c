"""What every DVC stage script shares: argument parsing defaults and error reporting.

`run_stage(name, main)` runs `main()`; the errors a user can cause (bad params, missing
or malformed data, unreadable checkpoints, a training run that cannot go on) end the
process with exit status 2 and one line on stderr naming what is wrong — no traceback.
"""

from __future__ import annotations

import sys
from typing import Callable

from .config import ConfigError
from .errors import TrainingError
from .io import CheckpointError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, CheckpointError, TrainingError, FileNotFoundError, ValueError,
)


def run_stage(name: str, main: Callable[[], object]) -> None:
    try:
        main()
    except USER_ERRORS as err:
        message = " ".join(str(err).split())  # one line, whatever the library wrote
        print(f"{name}: error: {message}", file=sys.stderr)
        sys.exit(2)
