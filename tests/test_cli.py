"""`python -m sbm sample`: a PNG from a checkpoint, clear errors for bad input."""

import subprocess
import sys

import pytest
import torch

from sbm.core.model import ScoreModel
from sbm.core.processes import VPSDE
from sbm.models.score import save_model
from sbm.nets.score import MLPNet


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
    proc = _cli("sample", "--checkpoint", checkpoint, "--n", 0)  # SamplerParams' own range, named by its flag
    assert proc.returncode == 2 and proc.stderr.strip() == "sbm sample: error: --n = 0: must be >= 1"
    proc = _cli("sample", "--checkpoint", checkpoint, "--steps", 0)
    assert proc.returncode == 2 and proc.stderr.strip() == "sbm sample: error: --steps = 0: must be >= 1"
    proc = _cli("sample", "--checkpoint", checkpoint, "--sampler", "magic")
    assert proc.returncode == 2 and "invalid choice: 'magic'" in proc.stderr


def test_a_latent_model_is_decoded_by_its_vae(tmp_path):
    """A latent checkpoint samples (4, 4, 4) latents and the CLI decodes them to 1×8×8 images
    with the VAE recorded in the checkpoint (or --vae); a VAE of another scale is refused."""
    import torch

    from sbm.io import load_tensors
    from sbm.latent.vae import VAE, save_vae, write_space
    from sbm.nets.score import UNetNet

    torch.manual_seed(0)
    vae = VAE([1, 8, 8], channels=[16, 32], latent_channels=4)
    vae.scale = 1.5
    z = {"train": torch.randn(4, 4, 4, 4), "test": torch.randn(2, 4, 4, 4)}
    space = write_space(tmp_path / "latent", [1, 8, 8], vae, z)
    model = ScoreModel(UNetNet(4, 4, 4, [16, 32], 1, [False, False], False), VPSDE())
    ckpt = tmp_path / "score.safetensors"
    save_model(ckpt, model, extra={"data_shape": space["shape"], "data_range": [-1.0, 1.0], "space": space,
                                   "space_dir": str(tmp_path / "latent")})
    out, save = tmp_path / "grid.png", tmp_path / "x.safetensors"
    proc = _cli("sample", "--checkpoint", ckpt, "--n", 6, "--steps", 3, "--out", out, "--save", save)
    assert proc.returncode == 0, proc.stderr
    x = load_tensors(save)[0]["x"]
    assert x.shape == (6, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    vae.scale = 3.0
    save_vae(tmp_path / "other.safetensors", vae)
    proc = _cli("sample", "--checkpoint", ckpt, "--n", 2, "--vae", tmp_path / "other.safetensors", "--out", out)
    assert proc.returncode == 2 and "not its VAE" in proc.stderr
    (tmp_path / "latent" / "vae.safetensors").unlink()
    proc = _cli("sample", "--checkpoint", ckpt, "--n", 2, "--out", out)
    assert proc.returncode == 2 and "pass --vae PATH" in proc.stderr


def test_prompts_sample_a_text_model_and_bad_prompts_are_refused(checkpoint, tmp_path):
    """--prompt draws --n samples per prompt from a text-conditional checkpoint under CFG; an empty or
    over-long prompt, or a prompt for an unconditional model, stops with one line before sampling."""
    from sbm.io import load_tensors
    from sbm.text.encoders import build_text_encoder
    from sbm.text.net import TextConditionalNet

    encoder = build_text_encoder("scratch", max_length=8, scratch_dim=16, scratch_layers=1, scratch_heads=2)
    text_ckpt = tmp_path / "text.safetensors"
    save_model(text_ckpt, ScoreModel(TextConditionalNet(MLPNet(2, 16, 1, 8).config, encoder), VPSDE()),
               extra={"data_shape": [2]})
    out, save = tmp_path / "p.png", tmp_path / "p.safetensors"
    proc = _cli("sample", "--checkpoint", text_ckpt, "--prompt", "the digit 3", "--prompt", "a handwritten one",
                "--guidance", 3, "--n", 5, "--steps", 4, "--out", out, "--save", save)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:4] == b"\x89PNG" and load_tensors(save)[0]["x"].shape == (10, 2)
    proc = _cli("sample", "--checkpoint", text_ckpt, "--prompt", "  ", "--out", out)
    assert proc.returncode == 2 and "prompt 0 (' ') is empty or whitespace only" in proc.stderr  # one line: spaces collapsed
    proc = _cli("sample", "--checkpoint", text_ckpt, "--prompt", "seven " * 9, "--out", out)
    assert proc.returncode == 2 and "more than the encoder's maximum of 8" in proc.stderr
    proc = _cli("sample", "--checkpoint", checkpoint, "--prompt", "a seven", "--out", out)
    assert proc.returncode == 2 and "not a text-conditional model" in proc.stderr
    proc = _cli("sample", "--checkpoint", text_ckpt, "--out", out)  # a text model needs a prompt
    assert proc.returncode == 2 and "needs a condition" in proc.stderr
    proc = _cli("sample", "--checkpoint", text_ckpt, "--prompt", "a one", "--guidance", -1)
    assert proc.returncode == 2 and proc.stderr.strip() == "sbm sample: error: --guidance = -1.0: must be >= 0.0"


def test_a_consistency_student_samples_with_the_consistency_sampler(tmp_path):
    """The CLI loads either kind of distilled student: a consistency model, --sampler consistency."""
    from sbm.distill.students import ConsistencyModel, save_consistency_model
    from sbm.io import load_tensors

    student = tmp_path / "student.safetensors"
    save_consistency_model(student, ConsistencyModel(ScoreModel(MLPNet(2, 16, 1, 8), VPSDE())),
                           extra={"data_shape": [2]})
    out, save = tmp_path / "s.png", tmp_path / "s.safetensors"
    proc = _cli("sample", "--checkpoint", student, "--sampler", "consistency", "--steps", 3, "--no-denoise",
                "--n", 16, "--out", out, "--save", save)
    assert proc.returncode == 0, proc.stderr
    tensors, meta = load_tensors(save)
    assert tensors["x"].shape == (16, 2) and meta["nfe"] == 2  # one evaluation per step, no denoise


def test_a_student_with_guidance_folded_in_samples_at_w_1_by_default(tmp_path):
    """A text student of distill.teacher = text carries its teacher's w in its metadata: --prompt
    then samples it with w = 1 (the same samples as --guidance 1), while the text model itself
    defaults to w = 2; guiding the student further is allowed, with a note."""
    from sbm.io import load_tensors
    from sbm.text.encoders import build_text_encoder
    from sbm.text.net import TextConditionalNet

    torch.manual_seed(0)
    encoder = build_text_encoder("scratch", max_length=8, scratch_dim=16, scratch_layers=1, scratch_heads=2)
    model = ScoreModel(TextConditionalNet(MLPNet(2, 16, 1, 8).config, encoder), VPSDE())
    text_ckpt, student = tmp_path / "text.safetensors", tmp_path / "student.safetensors"
    save_model(text_ckpt, model, extra={"data_shape": [2]})
    save_model(student, model, extra={"data_shape": [2], "student": {"method": "progressive", "guidance": 3.0}})

    def draw(ckpt, *extra):
        save = tmp_path / "x.safetensors"
        proc = _cli("sample", "--checkpoint", ckpt, "--prompt", "the digit 3", "--n", 6, "--steps", 4,
                    "--out", tmp_path / "p.png", "--save", save, *extra)
        assert proc.returncode == 0, proc.stderr
        return load_tensors(save)[0]["x"], proc.stderr

    folded, note = draw(student)
    assert torch.equal(folded, draw(student, "--guidance", 1)[0]) and "guides it further" not in note
    assert torch.equal(draw(text_ckpt)[0], draw(text_ckpt, "--guidance", 2)[0])
    assert not torch.equal(folded, draw(text_ckpt)[0])
    assert "already samples under CFG w = 3; --guidance 2 guides it further" in draw(student, "--guidance", 2)[1]
