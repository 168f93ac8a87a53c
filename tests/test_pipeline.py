"""The DVC pipeline end to end, in a temporary copy of the repository, on a tiny profile."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sbm.config import parse_params, read_yaml

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "data": {"n_train": 1000, "n_test": 500},
    "process": {"n_levels": 8},
    "train": {"steps": 60, "batch_size": 128, "checkpoint_every": 30, "log_every": 10},
    "sampler": {"n_samples": 300, "batch_size": 300, "steps_per_level": 5},
    "likelihood": {"n_points": 20, "batch_size": 20, "rtol": 1e-3, "atol": 1e-3},
    "eval": {"n_points": 300, "n_score_points": 200, "n_projections": 32, "compare_samplers": [],
             "compare_nfe": [5]},
}


def _merge(base, over):
    for k, v in over.items():
        base[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return base


def _run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _ran(output):
    return set(re.findall(r"Running stage '(\w+)'", output))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    dst = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(("reports/", "dvc.lock")):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    params = _merge(read_yaml(dst / "params.yaml"), TINY)
    parse_params(params)  # the tiny profile itself must be valid
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "TQDM_DISABLE": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        _run(cmd, dst, env)
    return dst, env


def _set(repo_dir, section, key, value):
    path = repo_dir / "params.yaml"
    params = read_yaml(path)
    if section:
        params[section][key] = value
    else:
        params[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_repro_runs_every_stage_then_nothing_then_only_what_changed(repo):
    d, env = repo
    dvc = [sys.executable, "-m", "dvc"]
    first = _run([*dvc, "repro"], d, env)
    assert _ran(first) == {"prepare", "train_score", "sample", "compare_samplers", "evaluate", "report"}
    for out in ("data/models/score.safetensors", "reports/metrics.json", "reports/report.md",
                "reports/samples.png", "reports/loss.png"):
        assert (d / out).is_file(), out
    assert "Score error per noise level" in (d / "reports/report.md").read_text()

    again = _run([*dvc, "repro"], d, env)
    assert _ran(again) == set(), again

    _set(d, None, "loss", "ssm")
    after_loss = _ran(_run([*dvc, "repro"], d, env))
    assert "prepare" not in after_loss and {"train_score", "sample", "evaluate"} <= after_loss

    _set(d, "sampler", "steps_per_level", 4)
    after_sampler = _ran(_run([*dvc, "repro"], d, env))
    assert {"prepare", "train_score"}.isdisjoint(after_sampler) and {"sample", "evaluate"} <= after_sampler


@pytest.mark.slow
def test_a_bad_param_stops_the_stage_with_a_one_line_message(repo):
    d, env = repo
    _set(d, "train", "steps", 0)
    proc = subprocess.run([sys.executable, "stages/train_score.py"], cwd=d, env=env, capture_output=True, text=True)
    _set(d, "train", "steps", 60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "train_score: error: params.yaml: train.steps = 0: must be >= 1"
