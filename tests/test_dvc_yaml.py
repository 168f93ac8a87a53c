"""dvc.yaml declares what each stage really uses: every sbm module it imports (transitively)
and every params.yaml section it reads, so DVC reruns exactly what a change affects."""

import ast
import re
from pathlib import Path

import pytest

from sbm.config import read_yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = read_yaml(ROOT / "dvc.yaml")["stages"]


def _sbm_imports(path: Path, seen: set[str] | None = None) -> set[str]:
    """sbm/*.py files imported by `path`, following imports inside sbm (incl. function-level)."""
    seen = set() if seen is None else seen
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom):
            if node.level and path.parent.name == "sbm":  # relative: from .x import y / from . import x
                base = node.module.split(".")[0] if node.module else None
                names = [base] if base else [a.name for a in node.names]
            elif node.module and node.module.split(".")[0] == "sbm":
                parts = node.module.split(".")
                names = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("sbm.")]
        for name in names:
            rel = f"sbm/{name}.py"
            if (ROOT / rel).is_file() and rel not in seen:
                seen.add(rel)
                _sbm_imports(ROOT / rel, seen)
    return seen


def _deps(stage: dict) -> set[str]:
    return {d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])}


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_deps_cover_its_sbm_imports(name):
    stage = STAGES[name]
    script = re.search(r"(stages/\w+\.py)", stage["cmd"]).group(1)
    deps = _deps(stage)
    assert script in deps
    missing = _sbm_imports(ROOT / script) - deps - {"sbm/__init__.py"}
    assert not missing, f"stage {name}: add to deps in dvc.yaml: {sorted(missing)}"


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_params_cover_the_sections_its_script_reads(name):
    stage = STAGES[name]
    script = (ROOT / re.search(r"(stages/\w+\.py)", stage["cmd"]).group(1)).read_text()
    read = set(re.findall(r"\bparams\.(\w+)", script)) - {"yaml"}
    declared = {(p if isinstance(p, str) else next(iter(p))).split(".")[0] for p in stage.get("params", [])}
    assert read <= declared, f"stage {name} reads params {sorted(read - declared)} not declared in dvc.yaml"
