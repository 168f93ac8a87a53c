"""Beyond one machine (docs/scale.md): the SLURM launcher strings, the GPU check's refusal and
its CPU dry run, and a local-directory DVC remote holding this repository's kind of outputs
(a stage's output directory, its metrics and the run cache) through push and pull."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SLURM = ROOT / "scripts" / "slurm"
BIN = Path(sys.executable).parent  # the venv's dvc sits beside its python


def _bash(script: str, env: dict, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def fake_slurm(tmp_path) -> dict:
    """A fake SLURM task environment: 2 nodes × 4 GPUs, this task rank 1, and `scontrol`,
    `accelerate` and `dvc` stand-ins on PATH that print what they were given."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "scontrol").write_text('#!/bin/sh\n[ "$1 $2 $3" = "show hostnames gpu-a[01-02]" ] && '
                                   'printf "gpu-a01\\ngpu-a02\\n"\n')
    (bin_ / "accelerate").write_text('#!/bin/sh\necho "accelerate $*"\n')
    (bin_ / "dvc").write_text('#!/bin/sh\nfor a in "$@"; do printf "<%s>\\n" "$a"; done\n')
    (bin_ / "python").symlink_to(sys.executable)
    for f in bin_.iterdir():
        f.chmod(0o755)
    return {"PATH": f"{bin_}:/usr/bin:/bin", "HOME": str(tmp_path), "SLURM_NNODES": "2", "SLURM_PROCID": "1",
            "SLURM_GPUS_ON_NODE": "4", "SLURM_JOB_NODELIST": "gpu-a[01-02]", "SBM_VENV": str(tmp_path / "no-venv")}


# --------------------------------------------------------------------------- SLURM


@pytest.mark.parametrize("script", ["repro.sbatch", "accelerate_node.sh", "launcher.sh"])
def test_slurm_scripts_are_valid_bash(script):
    proc = subprocess.run(["bash", "-n", str(SLURM / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_launcher_flags_for_two_nodes_of_four_gpus_rank_one(fake_slurm):
    proc = _bash("source scripts/slurm/launcher.sh && sbm_accelerate_cmd", fake_slurm)
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    assert words[:3] == ["accelerate", "launch", "--multi_gpu"]
    flags = dict(zip(words[3::2], words[4::2]))
    assert flags == {"--num_machines": "2", "--machine_rank": "1", "--num_processes": "8",
                     "--main_process_ip": "gpu-a01", "--main_process_port": "29500"}


@pytest.mark.parametrize("env, expected", [
    ({"SLURM_GPUS_ON_NODE": "", "SLURM_GPUS_PER_NODE": "gpu:a100:2"}, "--num_processes 4"),  # gres form
    ({"SBM_GPUS_PER_NODE": "8", "SBM_MAIN_PORT": "31000"}, "--num_processes 16"),
    ({"SLURM_NNODES": "1", "SLURM_PROCID": "0", "SLURM_GPUS_ON_NODE": "1"}, "accelerate launch --num_processes 1"),
])
def test_launcher_reads_the_gpu_count_and_port_from_the_environment(fake_slurm, env, expected):
    proc = _bash("source scripts/slurm/launcher.sh && sbm_accelerate_cmd", {**fake_slurm, **env})
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout
    if "SBM_MAIN_PORT" in env:
        assert "--main_process_port 31000" in proc.stdout


def test_launcher_refuses_without_a_gpu_count_or_outside_slurm(fake_slurm):
    no_gpus = {k: v for k, v in fake_slurm.items() if k != "SLURM_GPUS_ON_NODE"}
    proc = _bash("source scripts/slurm/launcher.sh && sbm_accelerate_cmd", no_gpus)
    assert proc.returncode != 0 and "GPUs per node" in proc.stderr
    outside = {k: v for k, v in fake_slurm.items() if not k.startswith("SLURM_NNODES")}
    proc = _bash("source scripts/slurm/launcher.sh && sbm_accelerate_cmd", outside)
    assert proc.returncode != 0 and "SLURM_NNODES" in proc.stderr


def test_node_wrapper_execs_accelerate_with_the_stage(fake_slurm):
    proc = _bash("scripts/slurm/accelerate_node.sh stages/train_score.py --params params.yaml", fake_slurm)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("accelerate launch --multi_gpu --num_machines 2 --machine_rank 1 --num_processes 8 "
                                   "--main_process_ip gpu-a01 --main_process_port 29500 "
                                   "stages/train_score.py --params params.yaml")


def test_sbatch_runs_dvc_with_the_profile_and_the_srun_launcher(fake_slurm):
    """repro.sbatch with a profile and extra dvc options: `dvc exp run`, the profile's -S
    arguments, then train.launcher set to the srun wrapper (a -S value DVC reads back as the string)."""
    proc = _bash("bash scripts/slurm/repro.sbatch profiles/mnist.yaml -- -n 'mnist 2x4'",
                 {**fake_slurm, "SLURM_PROCID": "0"})
    assert proc.returncode == 0, proc.stderr
    args = [line[1:-1] for line in proc.stdout.splitlines()]
    assert args[:2] == ["exp", "run"] and args[-2:] == ["-n", "mnist 2x4"]
    assert "data.hf.path=mnist" in args and "train.mixed_precision=bf16" in args
    launcher = args[-3]
    assert args[-4] == "-S" and launcher == ("train.launcher='srun --ntasks-per-node=1 --kill-on-bad-exit=1 "
                                             "scripts/slurm/accelerate_node.sh'")
    assert "2 node(s) x 4 GPU(s), first host gpu-a01" in proc.stderr


# --------------------------------------------------------------------------- GPU check


def test_gpu_check_is_valid_bash_and_refuses_without_cuda():
    proc = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the refusal is not reachable")
    proc = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 3 and "no CUDA device" in proc.stderr and "nothing was run" in proc.stderr


@pytest.mark.slow
def test_gpu_check_cpu_dry_run_writes_its_numbers(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["cpu_dry_run"] and report["device"] == "cpu"
    assert report["training"]["images_per_s"] > 0 and report["sampling"]["samples_per_s"] > 0
    assert report["sampling"]["finite"] and report["training"]["steps"] == 3
    assert "images/s" in proc.stdout and "samples/s" in proc.stdout


# --------------------------------------------------------------------------- DVC remote

STAGE = """\
import json, pathlib, sys
n = int(sys.argv[1])
out = pathlib.Path("data/models")
out.mkdir(parents=True, exist_ok=True)
(out / "score.safetensors").write_bytes(bytes(range(n)))
(out / "meta.json").write_text(json.dumps({"n": n}))
pathlib.Path("reports").mkdir(exist_ok=True)
pathlib.Path("reports/train.json").write_text(json.dumps({"final_loss": 0.5}))
pathlib.Path("ran").open("a").write("x")
"""
DVC_YAML = """\
stages:
  train:
    cmd: python train.py ${n}
    deps:
      - train.py
    params:
      - n
    outs:
      - data/models
    metrics:
      - reports/train.json:
          cache: false
"""


@pytest.mark.slow
def test_a_local_directory_remote_round_trips_the_outputs(tmp_path):
    """git init, dvc init, a one-stage pipeline writing a directory output (as data/models) and
    an uncached metric (as reports/*.json), dvc repro, a local remote, dvc push (and --run-cache:
    the remote holds the run records too); with the output and the whole cache deleted, dvc pull
    brings the files back and dvc repro finds the pipeline up to date without running the stage
    (what a second machine does after cloning: dvc.lock comes from git, the data from the remote)."""
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "site"),
           "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "GIT_CONFIG_GLOBAL": str(tmp_path / "gitconfig")}
    dvc = str(BIN / "dvc")

    def sh(*cmd):
        proc = subprocess.run(list(cmd), cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        return proc.stdout

    (repo / "train.py").write_text(STAGE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text("n: 200\n")
    sh("git", "init", "-q", ".")
    sh(dvc, "init", "-q")
    sh(dvc, "repro", "-q")
    model = repo / "data" / "models" / "score.safetensors"
    assert model.read_bytes() == bytes(range(200)) and (repo / "ran").read_text() == "x"
    sh(dvc, "remote", "add", "-d", "local", str(remote))
    sh(dvc, "push", "-q")
    sh(dvc, "push", "-q", "--run-cache")
    assert any(p.is_file() for p in (remote / "files").rglob("*"))
    assert any(p.is_file() for p in (remote / "runs").rglob("*")), "dvc push --run-cache pushed no run records"

    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    sh(dvc, "pull", "-q")
    assert model.read_bytes() == bytes(range(200))
    assert json.loads((repo / "data" / "models" / "meta.json").read_text()) == {"n": 200}
    sh(dvc, "repro", "-q")
    assert (repo / "ran").read_text() == "x", "the stage ran again after dvc pull"
    assert "up to date" in sh(dvc, "status")
