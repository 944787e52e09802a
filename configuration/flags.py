"""Typed settings as command-line flags and environment variables: one style for every process.

A settings class is a frozen dataclass. Each field is a flag (`max_labels` -> `--max-labels`)
and, where the caller gives an environment prefix, an environment variable
(`CLIP_GATEWAY_MAX_LABELS`); a flag wins over the environment, which wins over the default. A
field that is itself a settings class is composed: its fields become flags of the same parser (the
gateway's `limits`, the exporter's deployment `settings`, serve's whole `export`). What a field
needs beyond its type and default it says through `setting(...)`: help, choices, a flag in other
units (`--label-cache-mb` for `label_cache_bytes`), how its default reads in `--help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_SCALAR = (bool, int, float, str, Path)


def setting(
    default: Any,
    *,
    help: str = "",
    choices: Sequence[str] = (),
    unit: int = 1,
    flag: str = "",
    default_text: str = "",
) -> Any:
    """A field with more to say: `unit`, the flag's value times it is the field's (with `flag`
    naming the flag in that unit); `default_text`, the default as --help shows it."""
    metadata = {"help": help, "choices": tuple(choices), "unit": unit, "flag": flag, "default_text": default_text}
    return dataclasses.field(default=default, metadata=metadata)


def _scalar(annotation: Any) -> type:
    """The flag's type for a field's annotation: `int | None` reads as int (None: unset)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
        annotation = kinds[0] if len(kinds) == 1 else str
    if annotation not in _SCALAR:
        raise TypeError(f"a settings field must be one of {_SCALAR} (or None), not {annotation}")
    return typing.cast(type, annotation)


def truth(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"{name}={raw!r}: expected true or false")


def _fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return [(spec, hints[spec.name]) for spec in dataclasses.fields(cls)]


def add_flags(
    parser: argparse.ArgumentParser, cls: type, env: Mapping[str, str] | None = None, prefix: str = ""
) -> None:
    """Every field of `cls` (and of the settings classes it composes) as a flag of `parser`; with a
    `prefix`, each default read from `env` first."""
    for spec, annotation in _fields(cls):
        if dataclasses.is_dataclass(annotation):
            add_flags(parser, typing.cast(type, annotation), env, prefix)
            continue
        kind = _scalar(annotation)
        meta = spec.metadata
        unit = meta.get("unit", 1)
        flag_name = meta.get("flag") or spec.name
        default = spec.default if spec.default is not dataclasses.MISSING else None
        if default is not None and unit != 1:
            default //= unit
        env_name = (prefix + flag_name).upper() if prefix else ""
        raw = env.get(env_name) if env is not None and env_name else None
        shown = meta.get("default_text") or str(default)
        help_text = " ".join(
            part
            for part in (meta.get("help", ""), f"(env {env_name})" if env_name else "", f"(default {shown})")
            if part
        )
        flag = "--" + flag_name.replace("_", "-")
        if kind is bool:  # --image-urls / --no-image-urls; the environment says true/false
            value = default if raw is None else truth(env_name, raw)
            parser.add_argument(
                flag, dest=spec.name, action=argparse.BooleanOptionalAction, default=value, help=help_text
            )
            continue
        parser.add_argument(
            flag,
            dest=spec.name,
            type=kind,
            default=kind(raw) if raw is not None else default,
            choices=meta.get("choices") or None,
            metavar=None if meta.get("choices") else flag_name.upper(),
            help=help_text,
        )


def build(cls: type[T], values: Mapping[str, Any]) -> T:
    """An instance of `cls` from parsed flags (`vars(parser.parse_args())`), units applied."""
    fields: dict[str, Any] = {}
    for spec, annotation in _fields(cls):
        if dataclasses.is_dataclass(annotation):
            fields[spec.name] = build(typing.cast(type, annotation), values)
            continue
        value = values[spec.name]
        unit = spec.metadata.get("unit", 1)
        fields[spec.name] = value * unit if value is not None and unit != 1 else value
    return cls(**fields)


def parse(
    cls: type[T], parser: argparse.ArgumentParser, argv: Sequence[str] | None, env: Mapping[str, str], prefix: str
) -> T:
    """`cls` from `argv` and `env`: its flags added to `parser`, parsed, and built."""
    add_flags(parser, cls, env, prefix)
    return build(cls, vars(parser.parse_args(argv)))
