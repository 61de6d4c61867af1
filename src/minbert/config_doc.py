"""Self-description of the run configuration: every field with its help text as commented YAML
(``minbert config show``) and a JSON Schema of config files (``minbert config schema``), both
derived from the dataclasses of :mod:`minbert.config` and their ``metadata["help"]``.

Imports yaml and the standard library only (never torch): ``minbert --help`` uses
:func:`section_help`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, get_args, get_origin

import yaml

from .config import Config
from .config_values import EXP_NUMBER, to_dict

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_WIDE = 2**31 - 1  # no line folding in PyYAML's emitter
_LINE_BREAKS = ("\n", "\r", "\x85", "\u2028", "\u2029")


def field_help(f: dataclasses.Field) -> str:
    """The one-line help text of a config field (its ``metadata["help"]``; "" if it has none)."""
    return f.metadata.get("help", "")


def _flow(value: Any) -> str:
    """A plain value (scalar, list or mapping) as one line of flow YAML that ``yaml.safe_load`` reads back equal."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flow(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        # quoted as in a flow sequence, so that `,`, `[`, `#` etc. stay inside the string
        text = yaml.safe_dump([value], default_flow_style=True, width=_WIDE, allow_unicode=True).strip()[1:-1]
        if any(b in text for b in _LINE_BREAKS):  # line breaks: double-quoted with escapes instead
            text = yaml.safe_dump(value, default_style='"', width=_WIDE, allow_unicode=True).strip()
        return text
    text = yaml.safe_dump(value, width=_WIDE)
    return text[: -len("\n...\n")] if text.endswith("\n...\n") else text.strip()


def _section_map_value(tp: Any) -> type | None:
    """The dataclass V of a ``dict[str, V]`` annotation (tasks, custom_tasks), else None."""
    if get_origin(tp) is dict:
        vt = get_args(tp)[1]
        if dataclasses.is_dataclass(vt):
            return vt
    return None


def _commented(obj: Any, depth: int, lines: list[str], prefix: str = "") -> None:
    """Append the fields of the dataclass ``obj`` as YAML lines, each with its help as a comment."""
    hints = typing.get_type_hints(type(obj))
    pad = prefix + "  " * depth
    for f in dataclasses.fields(obj):
        value, note = getattr(obj, f.name), f"  # {field_help(f)}" if field_help(f) else ""
        entry_type = _section_map_value(hints[f.name])
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:{note}")
            _commented(value, depth + 1, lines, prefix)
        elif entry_type is not None and value:
            lines.append(f"{pad}{f.name}:{note}")
            for key, entry in value.items():
                lines.append(f"{pad}  {_flow(key)}:")
                _commented(entry, depth + 2, lines, prefix)
        elif entry_type is not None:  # an empty map: its entries' fields, commented out
            lines.append(f"{pad}{f.name}: {{}}{note}")
            lines.append(f"{prefix or '# '}{'  ' * depth}  <name>:  # one entry, with these fields and defaults")
            _commented(entry_type(), depth + 2, lines, prefix or "# ")
        else:
            lines.append(f"{pad}{f.name}: {_flow(to_dict(value))}{note}")


def commented_yaml(cfg: Config) -> str:
    """``cfg`` as YAML, every field on its own line with its help text as a trailing comment.

    ``from_dict(yaml.safe_load(text)) == cfg``. An empty ``tasks`` or ``custom_tasks`` map is
    followed by its entries' fields with their defaults, commented out.
    """
    lines = [
        "# minbert config, resolved (file, overrides, defaults); every key is optional;"
        " `minbert config schema` lists the types"]
    _commented(cfg, 0, lines)
    return "\n".join(lines) + "\n"


def _type_schema(tp: Any, defs: dict[str, dict]) -> dict:
    """The JSON Schema of the values that :func:`minbert.config_values.build_value` accepts for the
    annotation ``tp``."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if tp.__name__ not in defs:
            defs[tp.__name__] = _dataclass_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if origin in (typing.Union, types.UnionType):
        alts: list[dict] = []
        for a in get_args(tp):
            s = _type_schema(a, defs) if a is not type(None) else {"type": "null"}
            alts += s["anyOf"] if set(s) == {"anyOf"} else [s]  # float | None: one flat anyOf
        return {"anyOf": alts}
    if origin is Literal:
        values = list(get_args(tp))
        values += [b for b, word in ((True, "on"), (False, "off")) if word in values]  # YAML 1.1 on/off
        return {"enum": values}
    if origin is dict:
        vt = get_args(tp)[1]
        value = _type_schema(vt, defs)
        if dataclasses.is_dataclass(vt):  # `sst:` with no value is an entry of defaults
            value = {"anyOf": [value, {"type": "null"}]}
        return {"type": "object", "additionalProperties": value}
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            if get_origin(args[0]) is Literal:
                return _choice_list_schema([str(v) for v in get_args(args[0])])
            return {"type": "array", "items": _type_schema(args[0], defs)}
        items = [_type_schema(a, defs) for a in args]
        return {"type": "array", "prefixItems": items, "items": False, "minItems": len(items)}
    if tp is float:  # PyYAML reads 1e-5 (no dot) as a string, which minbert accepts
        return {"anyOf": [{"type": "number"}, {"type": "string", "pattern": rf"^\s*{EXP_NUMBER.pattern}\s*$"}]}
    simple = {int: "integer", bool: "boolean", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"unsupported config annotation {tp}")  # a bug in this module


def _choice_list_schema(choices: list[str]) -> dict:
    """A list of ``Literal`` choices (``output.report_to``) as :mod:`minbert.config` takes it: a
    list, or one string of comma-separated names; at least one name, each name once, and
    ``none`` (when it is a choice) only alone."""
    names = [c for c in choices if c != "none"]
    one = "(?:" + "|".join(re.escape(c) for c in names) + ")"
    # no name twice: no item (at the start or after a comma) that comes again as a later item
    twice = rf"(?!(?:.*,)?\s*({one})\s*,(?:.*,)?\s*\1\s*(?:,|$))"
    alone = "none|" if "none" in choices else ""
    text = {"type": "string", "pattern": rf"^\s*(?:{alone}{twice}{one}\s*(?:,\s*{one}\s*)*)\s*$"}
    items = {"type": "array", "items": {"enum": choices}, "minItems": 1, "uniqueItems": True}
    if "none" in choices:
        items["anyOf"] = [{"maxItems": 1}, {"not": {"contains": {"const": "none"}}}]
    return {"anyOf": [items, text]}


def _dataclass_schema(tp: type, defs: dict[str, dict]) -> dict:
    hints = typing.get_type_hints(tp)
    props = {}
    for f in dataclasses.fields(tp):
        prop = {**_type_schema(hints[f.name], defs), "description": field_help(f)}
        if not dataclasses.is_dataclass(hints[f.name]):  # a section's defaults are its fields'
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            prop["default"] = to_dict(default)
        props[f.name] = prop
    doc = (tp.__doc__ or "").strip().split("\n\n")[0]
    return {"type": "object", "description": " ".join(doc.split()), "properties": props, "additionalProperties": False}


def json_schema() -> dict:
    """A JSON Schema (draft 2020-12) of a config file, generated from the dataclasses: types,
    ``Literal`` choices as enums, defaults, the help texts as descriptions, no unknown keys (the
    old ``output.tensorboard`` bool, which loads alone, is marked deprecated)."""
    defs: dict[str, dict] = {}
    root = _dataclass_schema(Config, defs)
    # run folders written before output.report_to hold output.tensorboard, which loads alone
    output = defs["OutputConfig"]
    output["properties"]["tensorboard"] = {
        "type": "boolean", "deprecated": True,
        "description": "replaced by report_to (true: [tensorboard], false: [none]); not beside report_to",
    }
    output["not"] = {"required": ["tensorboard", "report_to"]}
    return {"$schema": JSON_SCHEMA_DIALECT, "title": "minbert config", **root, "$defs": defs}


def section_help() -> list[tuple[str, str]]:
    """(name, help) of each top-level config key; a map of sections is named ``key.<name>``."""
    hints = typing.get_type_hints(Config)
    return [
        (f"{f.name}.<name>" if _section_map_value(hints[f.name]) else f.name, field_help(f))
        for f in dataclasses.fields(Config)
    ]
