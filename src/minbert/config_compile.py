"""``train.compile_options`` against the installed torch: inductor's settings by name, checked and
handed to ``torch.compile(options=...)``. Imports torch, so only training calls it (their form is
checked with the rest of the config, in :mod:`minbert.config`)."""

from __future__ import annotations

import math
import types
import typing
from typing import Any

from .config_sections import TrainConfig
from .errors import ConfigError


def compile_options(tc: TrainConfig) -> dict[str, Any]:
    """``train.compile_options`` as ``torch.compile(options=...)`` takes them: dotted names
    (``{triton: {enable_pdl: true}}`` is ``{"triton.enable_pdl": True}``), a whole number given
    for a float setting made a float. Each must be a public setting of this torch's inductor
    (``torch._inductor.config``; imports it) whose type (``get_type``) is a bool, an int, a finite
    float, a string or a choice of strings, or such a type or None, and the value must be of it.

    Raises:
        ConfigError: naming the setting and the reason.
    """
    flat = {f"{k}.{sub}" if isinstance(v, dict) else k: x
            for k, v in tc.compile_options.items() for sub, x in (v.items() if isinstance(v, dict) else [("", v)])}
    if not flat:
        return {}
    import torch
    from torch._inductor import config as inductor

    settings, out = inductor.get_config_copy(), {}
    for name, value in flat.items():
        where = f"train.compile_options.{name}"
        if name not in settings or name.startswith(("_", "test_configs.")) or "TESTING" in name:
            section = any(k.startswith(name + ".") for k in settings)
            raise ConfigError(f"{where}: a section of settings, e.g. {name}: {{...}}" if section else
                              f"{where}: torch {torch.__version__} has no such public inductor setting")
        kinds = _setting_kinds(inductor.get_type(name))
        if not kinds:
            raise ConfigError(f"{where}: a setting of type {inductor.get_type(name)}, not settable here")
        if not any(_is_kind(value, k) for k in kinds):
            raise ConfigError(f"{where}: expected {' or '.join(_kind_name(k) for k in kinds)}, got {value!r}")
        out[name] = float(value) if float in kinds and type(value) is int and int not in kinds else value
    return out


def _setting_kinds(tp: Any) -> list[Any]:
    """The kinds of value a setting of type ``tp`` takes here: bool, int, float, str, or a tuple
    of string choices (a ``Literal``); none for other types (None alone, callables, containers)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [k for a in typing.get_args(tp) if a is not type(None) for k in _setting_kinds(a)]
    if typing.get_origin(tp) is typing.Literal:
        return [typing.get_args(tp)]
    return [tp] if tp in (bool, int, float, str) else []


def _is_kind(value: Any, kind: Any) -> bool:
    if isinstance(kind, tuple):
        return value in kind and not isinstance(value, bool)
    if kind is float:
        return type(value) in (int, float) and math.isfinite(value)
    return type(value) is kind


def _kind_name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return f"one of {list(kind)}"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}[kind]
