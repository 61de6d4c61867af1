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


def compile_options(tc: TrainConfig, source: str = "") -> dict[str, Any]:
    """``train.compile_options`` as ``torch.compile(options=...)`` takes them: dotted names
    (``{triton: {enable_pdl: true}}`` is ``{"triton.enable_pdl": True}``), a whole number given
    for a float setting made a float. Each must be a public setting of this torch's inductor
    (``torch._inductor.config``; imports it) whose type (``get_type``) is a bool, an int, a finite
    float, a string or a choice (``Literal``), or such a type or None, and the value must be of it.
    ``source`` (a file, a row) starts each error message.

    Raises:
        ConfigError: naming the setting and the reason.
    """
    flat = {f"{k}.{sub}" if isinstance(v, dict) else k: x
            for k, v in tc.compile_options.items() for sub, x in (v.items() if isinstance(v, dict) else [("", v)])}
    if not flat:
        return {}
    from torch._inductor import config as inductor

    settings, out = inductor.get_config_copy(), {}
    for name, value in flat.items():
        where = f"{source}: " * bool(source) + f"train.compile_options.{name}"
        problem = _unknown(name, settings)
        kinds = [] if problem else _setting_kinds(inductor.get_type(name))
        if not problem and not kinds:
            problem = f"a setting of type {inductor.get_type(name)}, not settable here"
        if not problem and not any(_is_kind(value, k) for k in kinds):
            quote = " (quote it: a string)" if str in kinds or any(isinstance(k, tuple) for k in kinds) else ""
            problem = f"expected {' or '.join(_kind_name(k) for k in kinds)}, got {value!r}{quote}"
        if problem:
            raise ConfigError(f"{where}: {problem}")
        out[name] = float(value) if float in kinds and type(value) is int and int not in kinds else value
    return out


def _unknown(name: str, settings: dict[str, Any]) -> str | None:
    """Why ``name`` is no public setting to give a value (None: it is one)."""
    import torch

    parts = name.split(".")
    holder = next((".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in settings), None)
    if holder:  # an entry of a setting that is a mapping (fx_passes_numeric_check.pre_grad)
        return f"{holder} is a setting of type {type(settings[holder]).__name__}, not a section; not settable here"
    if any(k.startswith(name + ".") for k in settings):
        return f"a section, not a setting: give its entries ({name}: {{<setting>: <value>}})"
    private = name.startswith(("_", "test_configs.")) or "TESTING" in name or parts[-1].isupper()
    if name not in settings or private:
        return f"torch {torch.__version__} has no such public inductor setting"
    return None


def _setting_kinds(tp: Any) -> list[Any]:
    """The kinds of value a setting of type ``tp`` takes here: bool, int, float, str, or a tuple
    of choices (a ``Literal``); none for other types (None alone, callables, containers)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [k for a in typing.get_args(tp) if a is not type(None) for k in _setting_kinds(a)]
    if typing.get_origin(tp) is typing.Literal:
        return [typing.get_args(tp)]
    return [tp] if tp in (bool, int, float, str) else []


def _is_kind(value: Any, kind: Any) -> bool:
    if isinstance(kind, tuple):  # a choice: of its own type (1.0 is not the choice 1, True not 1)
        return any(type(value) is type(c) and value == c for c in kind)
    if kind is float:
        try:
            return type(value) in (int, float) and math.isfinite(value)
        except OverflowError:  # an integer too large for a float
            return False
    return type(value) is kind


def _kind_name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return f"one of {list(kind)}"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}[kind]
