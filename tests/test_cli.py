"""`python -m sbm sample`: a PNG from a checkpoint, clear errors for bad input."""

import subprocess
import sys

import pytest

from sbm.models import ScoreModel, save_model
from sbm.nets import MLPNet
from sbm.processes import VPSDE


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "score.safetensors"
    save_model(path, ScoreModel(MLPNet(2, 16, 1, 8), VPSDE()), extra={"data_shape": [2]})
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "sbm", *map(str, args)], capture_output=True, text=True)


def test_sample_writes_a_png_and_the_tensors(checkpoint, tmp_path):
    out, save = tmp_path / "grid.png", tmp_path / "x.safetensors"
    proc = _cli("sample", "--checkpoint", checkpoint, "--n", 64, "--sampler", "ddim", "--steps", 10,
                "--out", out, "--save", save)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from sbm.io import load_tensors

    tensors, meta = load_tensors(save)
    assert tensors["x"].shape == (64, 2) and meta["nfe"] == 10  # 9 DDIM steps + the final denoise
    assert "NFE 10" in proc.stdout


def test_sample_errors_are_one_line(checkpoint, tmp_path):
    proc = _cli("sample", "--checkpoint", tmp_path / "absent.safetensors", "--out", tmp_path / "g.png")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"sbm sample: error: {tmp_path / 'absent.safetensors'}: no such checkpoint"
    proc = _cli("sample", "--checkpoint", checkpoint, "--n", 0)
    assert proc.returncode == 2 and "--n must be >= 1" in proc.stderr
    proc = _cli("sample", "--checkpoint", checkpoint, "--sampler", "magic")
    assert proc.returncode == 2 and "invalid choice: 'magic'" in proc.stderr
