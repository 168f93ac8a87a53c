"""benchmarks/sampler_grid.py: its arguments are checked before any work, paths it records are
portable, and a missing input stops it with the path named."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def grid(benchmark_script):
    return benchmark_script("sampler_grid")


def test_lists_are_parsed_and_an_unknown_schedule_is_refused(grid, capsys):
    args = grid.parse_args(["--samplers", "dpmpp_2m,unipc", "--nfe", "5,10", "--schedules", "uniform,karras"])
    assert (args.samplers, args.nfe, args.schedules) == (["dpmpp_2m", "unipc"], [5, 10], ["uniform", "karras"])
    with pytest.raises(SystemExit):
        grid.parse_args(["--schedules", "uniform,cosine"])
    assert "unknown cosine" in capsys.readouterr().err


def test_recorded_paths_are_relative_to_the_repository_or_bare_names(grid, tmp_path):
    assert grid.portable(str(ROOT / "data" / "prepared")) == "data/prepared"
    assert grid.portable(str(tmp_path / "pixel.safetensors")) == "pixel.safetensors"
    assert grid.portable(None) is None


def test_mean_sd_cells(grid):
    assert grid.fmt({"mean": 9.6021, "sd": 0.8231}) == "9.602 ± 0.82"
    assert grid.fmt({"mean": 9.6021, "sd": None}) == "9.602"
    assert grid.fmt(None) == "-"


def test_a_missing_model_stops_the_run_naming_it(grid, tmp_path):
    with pytest.raises(SystemExit, match="missing.safetensors"):
        grid.main(["--model", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "out.json")])
    assert not (tmp_path / "out.json").exists()
