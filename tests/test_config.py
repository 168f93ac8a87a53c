"""params.yaml is the single source: it parses, lists every key, and bad values fail early."""

import dataclasses
import re
from pathlib import Path

import pytest

from sbm.config.params import Params, load_params, parse_params, read_yaml
from sbm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _leaf_keys(cls, prefix=""):
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):  # a params section
            yield from _leaf_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def _flatten(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def test_repo_params_parse_and_list_every_key():
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    in_file = set(_flatten(read_yaml(ROOT / "params.yaml")))
    assert in_file == set(_leaf_keys(Params)), "params.yaml must list every parameter (and only those)"


def test_every_key_in_params_yaml_is_commented():
    lines = (ROOT / "params.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\s*([A-Za-z_]+):", line)
        if not m:
            continue
        above = lines[i - 1].strip() if i else ""
        assert "#" in line or above.startswith("#"), f"params.yaml line {i + 1} ({m.group(1)}) has no comment"


@pytest.mark.parametrize(
    "data,match",
    [
        ({"trian": {}}, r"unknown key trian; allowed keys: seed, loss"),
        ({"train": {"stpes": 3}}, r"unknown key train\.stpes; allowed keys in train: steps"),
        ({"train": {"steps": "many"}}, r"train\.steps = 'many': expected an integer"),
        ({"train": {"steps": 2.5}}, r"train\.steps = 2\.5: expected an integer"),
        ({"train": {"steps": True}}, r"train\.steps = True: expected an integer"),
        ({"sampler": {"denoise": "yes"}}, r"sampler\.denoise = 'yes': expected true or false"),
        ({"data": {"gmm": {"means": "x"}}}, r"data\.gmm\.means = 'x': expected a list"),
        ({"train": {"steps": 0}}, r"train\.steps = 0: must be >= 1"),
        ({"sampler": {"steps_per_level": 0}}, r"sampler\.steps_per_level = 0: must be >= 1"),
        ({"eval": {"seeds": 0}}, r"eval\.seeds = 0: must be >= 1"),
        ({"process": {"sigma_min": -0.1}}, r"process\.sigma_min = -0\.1: must be > 0"),
        ({"process": {"sigma_max": -3}}, r"process\.sigma_max = -3\.0: must be > 0"),
        ({"process": {"sigma_min": 2.0, "sigma_max": 1.0}}, r"sigma_min = 2\.0 >= process\.sigma_max = 1\.0"),
        ({"train": {"lr": float("nan")}}, r"train\.lr = nan: expected a finite number"),
        ({"loss": "sm"}, r"loss = 'sm': unknown value; allowed: dsm, eps, esm, ssm, ssm_vr"),
        ({"sampler": {"name": "euler"}}, r"sampler\.name = 'euler': unknown value; allowed: langevin"),
        ({"data": {"name": "mnist"}}, r"data\.name = 'mnist': unknown value; allowed: gmm"),
        ({"process": {"name": "vpsde"}}, r"process\.name = 'vpsde': unknown value; allowed: ncsn, ve, vp"),
        ({"process": {"name": "ddpm", "beta_max": 2000.0}}, r"process\.beta_max = 2000\.0 with n_timesteps = 1000"),
        ({"process": {"t_min": 1.0}}, r"process\.t_min = 1\.0: must be < 1"),
        ({"objective": {"weighting": "snr"}}, r"objective\.weighting = 'snr': unknown value; allowed: sigma2, likelihood"),
        ({"data": {"gmm": {"weights": [0.5, 0.5]}}}, r"data\.gmm: 2 weights but 3 means"),
        ({"data": {"gmm": {"weights": [1.0], "means": [[0, 0]], "covs": [[[1, 2], [2, 1]]]}}},
         r"data\.gmm\.covs\[0\].*symmetric positive definite"),
        ({"data": {"name": "hf"}}, r"data\.hf\.path = '': data\.name is 'hf'"),
        ({"train": None, "model": 3}, r"model = 3: expected a mapping"),
        ({"text": {"p_uncond": 0.0}}, r"text\.p_uncond = 0\.0: must be > 0, or the model never learns the uncond"),
        ({"text": {"templates": ["a handwritten digit"]}}, r"text\.templates: caption template 0 .* no placeholder"),
        ({"text": {"unseen_templates": ["{digit}"]}}, r"text\.unseen_templates: '\{digit\}' is also a training"),
        ({"text": {"prompts": ["a seven", "  "]}}, r"text\.prompts: prompt 1 \('  '\) is empty"),
        ({"text": {"prompts": ["seven " * 20]}}, r"text\.prompts: prompt 0 .* tokens long"),
        ({"text": {"guidance_weights": [1.0, -2.0]}}, r"text\.guidance_weights = \[1\.0, -2\.0\]: need at least one"),
        ({"text": {"scratch": {"dim": 30, "heads": 4}}}, r"text\.scratch\.dim = 30: must be divisible by"),
        ({"text": {"encoder": " "}}, r"text\.encoder = ' ': give minilm, scratch"),
        ({"likelihood": {"dequant_samples": 8}},
         r"likelihood\.dequant_samples = 8 with likelihood\.dequantization = 'uniform': uniform dequantisation"),
        ({"likelihood": {"dequantization": "iw"}},
         r"likelihood\.dequantization = 'iw': unknown value; allowed: uniform, importance"),
        ({"likelihood": {"dequantization": "importance", "dequant_samples": 0}},
         r"likelihood\.dequant_samples = 0: must be >= 1"),
        ({"monitor": {"sampler": "consistency"}}, r"monitor\.sampler = 'consistency': samples only a consistency"),
        ({"eval": {"conditional_sampler": "consistency"}},
         r"eval\.conditional_sampler = 'consistency': samples only a consistency"),
        ({"eval": {"conditional_nfe": 0}}, r"eval\.conditional_nfe = 0: must be >= 1"),
        ({"monitor": {"sampler": "heun"}}, r"monitor\.sampler = 'heun': unknown value; allowed: langevin"),
        ({"monitor": {"n_quality": 5}}, r"monitor\.n_quality = 5: must be 0 \(no FID\) or >= 16"),
        ({"monitor": {"nfe": 0}}, r"monitor\.nfe = 0: must be >= 1"),
        ({"monitor": {"enabled": "yes"}}, r"monitor\.enabled = 'yes': expected true or false"),
    ],
)
def test_bad_params_fail_with_key_value_and_allowed(data, match):
    with pytest.raises(ConfigError, match=match) as info:
        parse_params(data)
    assert str(info.value).startswith("params.yaml: ")


def test_yaml_booleans_do_not_swallow_strings(tmp_path):
    # PyYAML's YAML 1.1 would read `no` as False; DVC's -S writes it unquoted.
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  mixed_precision: no\n  lr: 1e-3\nsampler:\n  denoise: false\n")
    params = load_params(p)
    assert params.train.mixed_precision == "no"
    assert params.train.lr == 1e-3
    assert params.sampler.denoise is False


def test_missing_params_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: no such params file"):
        load_params(tmp_path / "nope.yaml")


def test_ints_are_accepted_for_floats():
    assert parse_params({"process": {"sigma_min": 1}}).process.sigma_min == 1.0


def test_every_section_checks_itself_when_built_in_code():
    """Ranges and section rules hold however a section is made: from params.yaml (the dotted key)
    or directly / by dataclasses.replace in code (its params.yaml key), so no caller re-checks."""
    import dataclasses

    from sbm.config.params import (
        DistillParams,
        SamplerParams,
        Section,
        TrainParams,
        UNetParams,
    )

    with pytest.raises(ConfigError, match=r"^sampler\.steps = 0: must be >= 1$"):
        dataclasses.replace(SamplerParams(), steps=0)
    with pytest.raises(ConfigError, match=r"^train\.lr = -1\.0: must be > 0"):
        TrainParams(lr=-1.0)
    with pytest.raises(ConfigError, match=r"^model\.unet\.channels"):  # a nested section's own rule
        UNetParams(channels=[32, 33])
    with pytest.raises(ConfigError, match=r"^params\.yaml: distill\.steps"):  # through the parser: full key
        parse_params({"distill": {"steps": 0}})
    assert SamplerParams(steps=3).steps == 3  # valid values construct
    params = parse_params({})
    for f in dataclasses.fields(params):
        section = getattr(params, f.name)
        if dataclasses.is_dataclass(section):
            assert isinstance(section, Section) and type(section).KEY == f.name, f.name
    assert DistillParams.KEY == "distill"
