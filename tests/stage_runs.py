"""Running a stage script's `main` inside a test, and stopping it as if killed right after the first
checkpoint its monitor shows (the monitor tests of tests/test_monitor_*.py). Imported by the test
modules beside it (pytest puts tests/ on sys.path)."""

import importlib.util
import sys
from pathlib import Path

from sbm.train.monitor import Monitor

ROOT = Path(__file__).resolve().parents[1]


def run_stage(name: str, argv: list[str], monkeypatch):
    """Run stages/<name>.py's main in this process with command line `argv` -> the stage module."""
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [f"stages/{name}.py", *argv])
    module.main()
    return module


class Killed(Exception):
    """Raised by the monitor `killed_after_first_checkpoint` arms, as a run killed there."""


def killed_after_first_checkpoint(monkeypatch):
    """Make Monitor.__call__ raise Killed right after it has shown a checkpoint -> restore(), which
    puts the real one back."""
    show = Monitor.__call__

    def once(self, model, step, live):
        show(self, model, step, live)
        raise Killed(step)

    monkeypatch.setattr(Monitor, "__call__", once)
    return lambda: monkeypatch.setattr(Monitor, "__call__", show)
