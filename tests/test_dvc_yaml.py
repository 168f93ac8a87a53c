"""dvc.yaml declares what each stage really uses: exactly the sbm modules it imports (transitively)
and every params.yaml section it reads, so DVC reruns exactly what a change affects."""

import re
from pathlib import Path

import pytest

from sbm.config.params import read_yaml
from sbm.pipeline.deps import sbm_files

ROOT = Path(__file__).resolve().parents[1]
STAGES = read_yaml(ROOT / "dvc.yaml")["stages"]


def _deps(stage: dict) -> set[str]:
    return {d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])}


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_deps_are_exactly_its_sbm_imports(name):
    stage = STAGES[name]
    script = re.search(r"(stages/\w+\.py)", stage["cmd"]).group(1)
    deps = _deps(stage)
    assert script in deps
    want = set(sbm_files(ROOT / script, ROOT))
    have = {d for d in deps if d.startswith("sbm/")}
    assert have == want, (f"stage {name}: missing {sorted(want - have)}, not imported {sorted(have - want)}; "
                          "run `python -m sbm.pipeline.deps --write`")


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_params_cover_the_sections_its_script_reads(name):
    stage = STAGES[name]
    script = (ROOT / re.search(r"(stages/\w+\.py)", stage["cmd"]).group(1)).read_text()
    read = set(re.findall(r"\bparams\.(\w+)", script)) - {"yaml"}
    declared = {(p if isinstance(p, str) else next(iter(p))).split(".")[0] for p in stage.get("params", [])}
    assert read <= declared, f"stage {name} reads params {sorted(read - declared)} not declared in dvc.yaml"
