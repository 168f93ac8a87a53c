"""Profiles: named sets of params.yaml overrides for real data sets and bigger machines.

A profile (``profiles/*.yaml``) is a YAML mapping holding *only* the params.yaml keys it
changes, nested as in params.yaml. It is applied leaf by leaf: every scalar or list in the
profile replaces the value at the same dotted key, mappings recurse, keys the profile does
not name keep params.yaml's value::

    merged = merge(params.yaml, profile)        # leaf-wise: profile wins
    params = parse_params(merged)               # the one validation (`sbm.config.params`)

`overrides(path)` turns a profile into the ``-S key=value`` arguments of ``dvc exp run``
(nested keys dotted; values in the override grammar DVC parses ``-S`` with: lists as flow
``[a,b]``, null/true/false, strings quoted only where needed), after checking that the
merged params validate; an unknown key or a bad value fails with a `ConfigError` naming the
key and the profile file. ``python -m sbm.config.profiles profiles/mnist.yaml`` prints the
whole command line, shell-quoted, to run or to ``eval``::

    eval "$(python -m sbm.config.profiles profiles/mnist.yaml --name mnist)"
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from sbm.config.params import Params, load_params, parse_params, read_yaml
from sbm.errors import ConfigError

#: a string the override grammar reads back as that same string without quotes
_PLAIN = re.compile(r"[A-Za-z_./][A-Za-z0-9_./\-]*")
#: plain-looking words the grammar (or YAML) would read as something other than a string
_RESERVED = {"true", "false", "null", "nan", "inf", "yes", "no", "on", "off", "y", "n", "~"}


def load_profile(path: str | Path) -> dict:
    """A profile file as a nested mapping (YAML 1.2 booleans, as params.yaml is read)."""
    data = read_yaml(path)
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: a profile must be a non-empty mapping of params.yaml keys")
    return data


def merge(base: dict, profile: dict) -> dict:
    """A copy of `base` with every leaf of `profile` set at the same key (mappings recurse;
    a scalar or list replaces whatever was there)."""
    out = copy.deepcopy(base)
    for key, value in profile.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def flatten(profile: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """[(dotted key, leaf value)] of a nested mapping, in file order; lists are leaves."""
    items: list[tuple[str, Any]] = []
    for key, value in profile.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{prefix or 'profile'}: key {key!r} is not a name")
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            if not value:
                raise ConfigError(f"{dotted} = {{}}: an empty mapping overrides nothing; remove it")
            items.extend(flatten(value, dotted))
        else:
            items.append((dotted, value))
    return items


def format_value(value: Any, key: str = "value") -> str:
    """One value in the ``-S`` override grammar: null, true/false, numbers, flow lists
    ``[a,b]``, strings bare when they read back as themselves, else single-quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{key} = {value!r}: not a finite number")
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(format_value(v, f"{key}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise ConfigError(f"{key} = {value!r}: a profile value must be a scalar or a list, not {type(value).__name__}")


def validate(profile: str | Path | dict, params: str | Path = "params.yaml", *, source: str | None = None) -> Params:
    """The `Params` of params.yaml with the profile applied, validated as `load_params` does.

    params.yaml is checked on its own first, so an error that is not the profile's is not
    blamed on it; errors of the merged tree are prefixed with the profile's file."""
    load_params(params)
    data = profile if isinstance(profile, dict) else load_profile(profile)
    name = source or (str(profile) if not isinstance(profile, dict) else "profile")
    flatten(data)  # shape errors (empty mappings, odd keys) first
    return parse_params(merge(read_yaml(params), data), f"{name} (applied to {params})")


def _has_key(tree: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def overrides(path: str | Path, params: str | Path = "params.yaml") -> list[str]:
    """The profile as ``-S key=value`` arguments of ``dvc exp run``: ["-S", "k=v", "-S", ...].

    Validated first (`validate`). A key that params.yaml does not spell out (a section left
    to its defaults) is written ``++key=value`` (the grammar's add-or-override)."""
    data = load_profile(path)
    validate(data, params, source=str(path))
    base = read_yaml(params)
    args: list[str] = []
    for key, value in flatten(data):
        args += ["-S", f"{'' if _has_key(base, key) else '++'}{key}={format_value(value, key)}"]
    return args


def command(path: str | Path, params: str | Path = "params.yaml", name: str | None = None) -> str:
    """The shell command line ``dvc exp run [-n NAME] -S ...`` that runs the pipeline with the profile."""
    argv = ["dvc", "exp", "run"] + (["-n", name] if name else []) + overrides(path, params)
    return shlex.join(argv)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m sbm.config.profiles",
                                 description="print the `dvc exp run` command line that applies a profile")
    ap.add_argument("profile", help="a profile file, e.g. profiles/mnist.yaml")
    ap.add_argument("--params", default="params.yaml", help="the params file the profile overrides")
    ap.add_argument("--name", default=None, help="experiment name (dvc exp run -n)")
    args = ap.parse_args(argv)
    try:
        print(command(args.profile, args.params, args.name))
    except ConfigError as err:
        print(f"profiles: error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
