"""The machinery of the typed stage outputs (`sbm.pipeline.outputs`): a `Record` is a frozen,
keyword-only dataclass whose fields say how it maps to a JSON object — a plain key (`key`,
`opt`), the keys of a nested record written inline (`inline`), or a family of keys formatted
from values (`family` with a `KeyFamily`, e.g. "cg_acc_s2_sd" from ("acc", 2.0, "sd")). `to_json()` and
`from_json(d)` are derived from the fields in order; reading is strict: a missing key, a value
of the wrong type or an unknown key raises `SchemaError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

from sbm import io


class SchemaError(ValueError):
    """A stage output without the layout of its type; the message names the file and the key."""


@dataclass(frozen=True)
class KeyPart:
    """One value inside a formatted metric key: the regex of its text, value -> text, text -> value."""

    pattern: str
    format: Callable[[Any], str]
    parse: Callable[[str], Any]


def _strength_text(value: float) -> str:
    """A guidance strength as it appears in a key: `f"{v:g}"` with "." -> "p" and "-" -> "m" (0.5 -> "0p5",
    1e-05 -> "1em05"). The same for the classifier scale and the CFG weight (evaluate_text's keys kept
    the "-" before; they differ only for 0 < w < 1e-4, written with a negative exponent)."""
    return f"{value:g}".replace(".", "p").replace("-", "m")


def _strength_value(text: str) -> float:
    return float(text.replace("p", ".").replace("m", "-"))


def choice(*names: str) -> KeyPart:
    return KeyPart("|".join(sorted(names, key=len, reverse=True)), str, str)


STRENGTH = KeyPart(r"m?(?:\d+(?:p\d+)?(?:e[+m]\d+)?|inf|nan)", _strength_text, _strength_value)


INDEX = KeyPart(r"\d+", str, int)


LEVEL = KeyPart(r"\d{2,}", lambda i: f"{i:02d}", int)


STEPS_OR_FULL = KeyPart(r"full|\d+", lambda s: "full" if s is None else str(s),
                        lambda t: None if t == "full" else int(t))


#: which statistic over the sampling seeds a key holds: "mean" (no suffix: the key a single value had)
#: or "sd" (suffix "_sd"), e.g. "cg_fid_s2" and "cg_fid_s2_sd"
STAT = KeyPart(r"(?:_sd)?", lambda s: {"mean": "", "sd": "_sd"}[s], lambda t: "sd" if t else "mean")


@dataclass(frozen=True)
class KeyFamily:
    """Metric keys formatted from values: `key(*values)` writes one (each "{}" of `template` is
    one `KeyPart`), `parse(key)` reads one back (None: the key is not of this family)."""

    template: str
    parts: tuple[KeyPart, ...]

    def key(self, *values) -> str:
        return self.template.format(*(p.format(v) for p, v in zip(self.parts, values, strict=True)))

    def parse(self, key: str) -> tuple | None:
        pieces = self.template.split("{}")
        pattern = re.escape(pieces[0]) + "".join(f"({p.pattern})" + re.escape(s)
                                                 for p, s in zip(self.parts, pieces[1:]))
        m = re.fullmatch(pattern, key)
        return None if m is None else tuple(p.parse(g) for p, g in zip(self.parts, m.groups()))

    @property
    def prefix(self) -> str:
        """The literal text every key of the family starts with."""
        return self.template.split("{}")[0]


def _spec(*, key: str | None = None, inline: bool = False, omit: bool = False,
          family: KeyFamily | None = None, start: int = 0, default=dataclasses.MISSING):
    """A field's JSON encoding. key: its JSON key (default: the field's name); inline: a nested
    record whose keys sit in this object (absent as a whole when the field is None); omit: the
    key is absent when the value is None (an output a stage legitimately leaves out); family: a
    tuple written as one key per element, family.key(start), family.key(start + 1), ..."""
    md = {"key": key, "inline": inline, "omit": omit, "family": family, "start": start}
    return field(default=None if omit else default, metadata=md)


def opt(**kw):
    """An optional value: its key is absent from the JSON (and the field None) when the stage leaves it out."""
    return _spec(omit=True, **kw)


def inline(*, optional: bool = False):
    """A nested record whose keys sit in the parent's object; optional: absent as a whole (None)."""
    return _spec(inline=True, default=None if optional else dataclasses.MISSING)


def key(name: str, **kw):
    """A field stored under another JSON key."""
    return _spec(key=name, **kw)


def family(fam: KeyFamily, start: int = 0):
    """A tuple stored as one key per element: fam.key(start), fam.key(start + 1), ..."""
    return _spec(family=fam, start=start)


class Context:
    """Where a value sits, for error messages: the file (or what was decoded) and the key path."""

    def __init__(self, file: str, trail: str = ""):
        self.file, self.trail = file, trail

    def at(self, k) -> Context:
        return Context(self.file, f"{self.trail}[{k}]" if isinstance(k, int) else
                    (f"{self.trail}.{k}" if self.trail else str(k)))

    def fail(self, what: str) -> SchemaError:
        return SchemaError(f"{self.file}: {self.trail} {what}" if self.trail else f"{self.file}: {what}")

    def missing(self, k: str) -> SchemaError:
        return SchemaError(f"{self.file}: missing key {k!r}" + (f" in {self.trail}" if self.trail else ""))


def _optional(tp) -> tuple[Any, bool]:
    """(X, True) for X | None, else (tp, False); the schema's unions are all of this form."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(tp)) != 2:
            raise TypeError(f"sbm.pipeline.outputs: no codec for the annotation {tp!r} (only X | None)")
        return args[0], True
    return tp, False


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _describe(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def convert(tp, v, ctx: Context):
    """v (decoded JSON) checked against the annotation tp and returned unchanged (ints stay ints),
    except lists as tuples, objects as records and a null float as NaN."""
    inner, optional = _optional(tp)
    if optional:
        return None if v is None else convert(inner, v, ctx)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return v
    if tp is float:
        if v is None:  # a non-finite float, written as null
            return math.nan
        if _number(v):
            return v
        raise ctx.fail(f"= {_describe(v)}: expected a number")
    if tp is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        raise ctx.fail(f"= {_describe(v)}: expected an integer")
    if tp is bool or tp is str:
        if isinstance(v, tp):
            return v
        raise ctx.fail(f"= {_describe(v)}: expected {'true or false' if tp is bool else 'a string'}")
    if origin is Literal:
        if any(v == a and type(v) is type(a) for a in args):
            return v
        raise ctx.fail(f"= {_describe(v)}: expected {' or '.join(map(repr, args))}")
    if origin is tuple:
        if not isinstance(v, (list, tuple)):  # a tuple: a stage's in-memory value
            raise ctx.fail(f"= {_describe(v)}: expected a list")
        return tuple(convert(args[0], x, ctx.at(i)) for i, x in enumerate(v))
    if origin is Mapping or tp is Mapping:
        if not isinstance(v, dict):
            raise ctx.fail(f"= {_describe(v)}: expected an object")
        return dict(v)
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp._decode(v, ctx)
    raise TypeError(f"sbm.pipeline.outputs: no codec for the annotation {tp!r}")


def _encode_value(v):
    if isinstance(v, Record):
        return v.to_json()
    if isinstance(v, tuple):
        return [_encode_value(x) for x in v]
    if isinstance(v, Mapping):
        return dict(v)
    return v


class Record:
    """Base of the typed outputs (frozen, keyword-only dataclasses): `to_json()` / `from_json(d)`
    derived from the fields in order (`key`, `opt`, `inline`, `family`), `write(path)` / `read(path)`.

    _CONST: keys with fixed values, written first (e.g. {"trained": True}) and checked when read.
    _MARKERS: the keys whose presence says that an optional inline record is there (default:
    its first key)."""

    _CONST: ClassVar[dict] = {}
    _MARKERS: ClassVar[tuple[str, ...]] = ()
    #: other layouts the same file may hold (a skipped stage's), tried first by `from_json` / `read`
    _VARIANTS: ClassVar[tuple[type[Record], ...]] = ()
    #: an empty object means the stage was skipped: `from_json` / `read` return None
    _EMPTY_IS_SKIPPED: ClassVar[bool] = False

    @classmethod
    def _hints(cls) -> dict:
        if "_hints_cache" not in cls.__dict__:
            cls._hints_cache = typing.get_type_hints(cls)
        return cls._hints_cache

    @classmethod
    def _keys(cls) -> list[str]:
        """The JSON keys this record writes itself or through inline records (families left out)."""
        out = list(cls._CONST)
        for f in dataclasses.fields(cls):
            if f.metadata.get("inline"):
                out += _optional(cls._hints()[f.name])[0]._keys()
            elif not f.metadata.get("family"):
                out.append(f.metadata.get("key") or f.name)
        return out

    @classmethod
    def _present(cls, d: Mapping) -> bool:
        return any(k in d for k in (cls._MARKERS or cls._keys()[:1]))

    @classmethod
    def _matches(cls, d: Mapping) -> bool:
        """Whether object d is of this variant (by its _CONST keys)."""
        return bool(cls._CONST) and all(k in d and d[k] == v and type(d[k]) is type(v) for k, v in cls._CONST.items())

    def to_json(self) -> dict:
        """The JSON object of this output, keys in the order the stages write them."""
        out = dict(self._CONST)
        for f in dataclasses.fields(self):
            v, md = getattr(self, f.name), f.metadata
            if md.get("inline"):
                if v is not None:
                    out.update(v.to_json())
            elif md.get("family"):
                out.update({md["family"].key(i): _encode_value(x) for i, x in enumerate(v, md["start"])})
            elif not (md.get("omit") and v is None):
                out[md.get("key") or f.name] = _encode_value(v)
        return out

    @classmethod
    def from_json(cls, d, *, file: str | Path | None = None):
        """The record of the JSON object `d` (SchemaError naming `file` and the key if it does not fit);
        for a file that may say its stage was skipped, that variant (or None for an empty metrics file)."""
        if cls._EMPTY_IS_SKIPPED and d == {}:
            return None
        for variant in cls._VARIANTS:
            if isinstance(d, dict) and variant._matches(d):
                return variant.from_json(d, file=file)
        return cls._decode(d, Context(str(file) if file is not None else f"{cls.__name__} JSON"))

    @classmethod
    def _decode(cls, d, ctx: Context):
        if not isinstance(d, dict):
            raise ctx.fail(f"= {_describe(d)}: expected an object")
        kwargs = cls._fields_from(d, ctx)
        known = set(cls._used_keys(d))
        extra = [k for k in d if k not in known]
        if extra:
            raise ctx.at(extra[0]).fail(f"is not a key of {cls.__name__} (its keys: {', '.join(cls._keys())})")
        return cls._build(kwargs, ctx)

    @classmethod
    def _build(cls, kwargs: dict, ctx: Context):
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ctx.fail(str(err)) from None

    @classmethod
    def _used_keys(cls, d: Mapping) -> list[str]:
        out = list(cls._CONST)
        for f in dataclasses.fields(cls):
            md = f.metadata
            if md.get("inline"):
                sub, optional = _optional(cls._hints()[f.name])
                if not optional or sub._present(d):
                    out += sub._used_keys(d)
            elif md.get("family"):
                out += [k for k in d if md["family"].parse(k) is not None]
            else:
                out.append(md.get("key") or f.name)
        return out

    @classmethod
    def _fields_from(cls, d: Mapping, ctx: Context) -> dict:
        for k, want in cls._CONST.items():
            if k not in d:
                raise ctx.missing(k)
            if d[k] != want or type(d[k]) is not type(want):
                raise ctx.at(k).fail(f"= {_describe(d[k])}: expected {want!r} for {cls.__name__}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            tp, md = cls._hints()[f.name], f.metadata
            if md.get("inline"):
                sub, optional = _optional(tp)
                kwargs[f.name] = (None if optional and not sub._present(d)
                                  else sub._build(sub._fields_from(d, ctx), ctx))
            elif md.get("family"):
                kwargs[f.name] = _decode_family(md["family"], md["start"], typing.get_args(tp)[0], d, ctx)
            else:
                k = md.get("key") or f.name
                if k not in d:
                    if md.get("omit"):
                        kwargs[f.name] = None
                        continue
                    raise ctx.missing(k)
                if md.get("omit"):  # present: null is a non-finite float, not "left out"
                    tp = _optional(tp)[0]
                kwargs[f.name] = convert(tp, d[k], ctx.at(k))
        return kwargs

    def write(self, path: str | Path) -> None:
        """Write the JSON of this output to `path`, atomically (sbm.io.write_json), after checking that
        it reads back (a field of the wrong type fails here, naming the file, not in the report)."""
        data = self.to_json()
        type(self)._decode(io.json_safe(data), Context(f"{path} (as written)"))
        io.write_json(path, data)

    @classmethod
    def read(cls, path: str | Path):
        """The output stored in `path` (FileNotFoundError if absent, SchemaError naming the key if malformed)."""
        return cls.from_json(io.read_json(path), file=path)


def _decode_family(fam: KeyFamily, start: int, tp, d: Mapping, ctx: Context) -> tuple:
    found = {}
    for k, v in d.items():
        parsed = fam.parse(k)
        if parsed is not None:
            found[parsed[0]] = convert(tp, v, ctx.at(k))
    want = list(range(start, start + len(found)))
    if sorted(found) != want:
        raise ctx.missing(fam.key(next(i for i in want if i not in found)))
    return tuple(found[i] for i in want)
