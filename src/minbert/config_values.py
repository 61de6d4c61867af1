"""Plain YAML values and typed frozen dataclasses: :func:`build_value` checks a value against a
type annotation (dataclasses, ``X | None``, ``Literal``, ``dict[str, X]``, tuples, float, int,
bool, str; a list of ``Literal`` choices may also be one string of comma-separated items) and
builds the dataclasses; :func:`to_dict` is its inverse; :func:`apply_overrides` applies dotted
overrides (``optim.lr=2e-5``) to a plain dict; :func:`legacy_tensorboard` reads the key that
``output.report_to`` replaced. :mod:`minbert.config` builds its
:class:`~minbert.config.Config` with them.

Imports yaml and the standard library only.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from typing import Any, Literal, get_args, get_origin

import yaml

from .errors import ConfigError

# YAML 1.1 (PyYAML) reads 1e-5 (no dot) as a string; accept it where a number is expected
EXP_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load(text)``, refusing a key given twice in one mapping, which safe_load lets
    the later one win silently. The check reads the composed node tree (nothing is constructed):
    a mapping's own scalar keys, compared as the values they load as (``~`` and ``null`` are one
    key, ``1`` and ``"1"`` two); keys merged in (``<<: *anchor``) may be overridden; an alias is
    checked once.

    Raises:
        yaml.YAMLError: not YAML; ``ConstructorError`` "duplicate key 'x'" with the key's line.
    """
    todo, checked = [yaml.compose(text, Loader=yaml.SafeLoader)], set()
    while todo:
        node = todo.pop()
        if node is None or id(node) in checked:
            continue
        checked.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            todo.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, value_node in node.value:
                todo.append(value_node)
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    key = yaml.safe_load(yaml.serialize(key_node))
                    if (type(key), key) in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key_node.value!r}", key_node.start_mark)
                    seen.add((type(key), key))
    return yaml.safe_load(text)


def yaml_problem(e: yaml.YAMLError) -> str:
    """What a YAML error says for the user: a duplicate key by name, else ``not valid YAML``."""
    problem = getattr(e, "problem", None) or ""
    return problem if problem.startswith("duplicate key") else "not valid YAML"


def build_value(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the type annotation ``tp`` and build dataclasses from dicts."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names, key=str)  # YAML keys may be numbers or null
        if unknown:
            prefix = f"{where}." if where else ""
            raise ConfigError(f"unknown config key {prefix}{unknown[0]} (allowed: {', '.join(sorted(names))})")
        kwargs = {k: build_value(hints[k], v, f"{where}.{k}" if where else k) for k, v in value.items()}
        return tp(**kwargs)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return build_value(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        if isinstance(value, bool) and ("on" if value else "off") in get_args(tp):
            value = "on" if value else "off"  # YAML 1.1 reads on/off as booleans
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin is dict:
        _, vt = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        names = [str(k) for k in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:  # 1 and "1" are two YAML keys but one name
            keys = " and ".join(repr(k) for k in value if str(k) == twice[0])
            raise ConfigError(f"{where}: {twice[0]!r} given twice (as {keys})")
        return {str(k): build_value(vt, v if v is not None else {}, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: a list of any length
            choices = list(get_args(args[0])) if get_origin(args[0]) is Literal else None
            if isinstance(value, str) and choices:  # a list of choices: also "a" or "a,b"
                value = [v.strip() for v in value.split(",")]
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{where}: expected a list{f' of {choices}' if choices else ''}, got {value!r}")
            return tuple(build_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(build_value(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is float:
        if isinstance(value, str) and EXP_NUMBER.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:  # an integer beyond float's range
            raise ConfigError(f"{where}: {str(value)[:20]}... is too large for a number") from None
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp} at {where}")  # a bug in this module



def to_dict(cfg: Any) -> Any:
    """A plain (YAML-serialisable) dict of a config."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, tuple):
        return [to_dict(v) for v in cfg]
    return cfg



def _parse_override(item: str) -> tuple[list[str], Any]:
    item = item[2:] if item.startswith("--") else item
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected --key.sub=value")
    key, text = item.split("=", 1)
    try:
        value = safe_load_unique(text) if text != "" else None
    except yaml.YAMLError as e:  # not YAML: kept as the string it is, but for a key given twice
        if yaml_problem(e) != "not valid YAML":
            raise ConfigError(f"override {key}: {yaml_problem(e)}") from None
        value = text
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of ``raw`` with dotted overrides (``optim.lr=2e-5``) applied."""
    out = copy.deepcopy(raw) if raw else {}
    for item in overrides:
        path, value = _parse_override(item)
        node = out
        for p in path[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {'.'.join(path)}: {p} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def legacy_tensorboard(raw: dict, replaces: bool = False) -> dict:
    """``output.tensorboard: bool`` (the key that ``output.report_to`` replaced) as ``report_to``;
    with ``replaces`` (an override of the old key) it replaces a ``report_to`` already there.

    Raises:
        ConfigError: the old key beside ``report_to`` (unless ``replaces``), or not a bool.
    """
    out = raw.get("output") if isinstance(raw, dict) else None
    if not isinstance(out, dict) or "tensorboard" not in out:
        return raw
    out = dict(out)
    value = out.pop("tensorboard")
    if ("report_to" in out and not replaces) or not isinstance(value, bool):
        raise ConfigError("output.tensorboard: replaced by output.report_to (e.g. [tensorboard] or none)")
    return {**raw, "output": {**out, "report_to": ["tensorboard" if value else "none"]}}
