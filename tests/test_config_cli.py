"""``minbert config show`` and ``minbert config schema``: every field of every config dataclass
explained, a printout that loads back to the same config, a JSON Schema that accepts every
shipped preset and rejects what minbert rejects; neither command imports torch."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import jsonschema
import pytest
import yaml

from minbert.cli import main
from minbert.config import Config, from_dict, load_config, resolve, to_dict
from minbert.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SRC = REPO / "src"


def config_dataclasses(tp: typing.Any = Config, seen: list | None = None) -> list[type]:
    """Config and every dataclass reachable from its type annotations (sections, map values, Optionals)."""
    seen = [] if seen is None else seen
    if dataclasses.is_dataclass(tp):
        if tp in seen:
            return seen
        seen.append(tp)
        for hint in typing.get_type_hints(tp).values():
            config_dataclasses(hint, seen)
    for arg in typing.get_args(tp):
        config_dataclasses(arg, seen)
    return seen


ALL_FIELDS = [(cls, f) for cls in config_dataclasses() for f in dataclasses.fields(cls)]


def presets() -> list[Path]:
    """Every config file under configs/; the ablation files (base + rows) are not configs."""
    files = sorted(CONFIGS.glob("*.yaml")) + sorted((CONFIGS / "paper").glob("*.yaml"))
    for path in sorted((CONFIGS / "beyond").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if "rows" in raw and "base" in raw:
            continue  # an ablation chain (minbert ablate), checked by its own tests
        files.append(path)
    return files


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse: --help, usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def show(capsys, *argv: str) -> str:
    code, out, err = run_main(capsys, "config", "show", *argv)
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def schema() -> dict:
    from minbert.config_doc import json_schema

    s = json_schema()
    jsonschema.Draft202012Validator.check_schema(s)
    return s


def validator(schema: dict) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema)


# ----------------------------------------------------------------------------------------------
# config show


@pytest.mark.parametrize("cls,f", ALL_FIELDS, ids=[f"{c.__name__}.{f.name}" for c, f in ALL_FIELDS])
def test_every_field_has_a_one_line_help(cls, f):
    text = f.metadata.get("help")
    assert isinstance(text, str) and len(text.split()) >= 2, f"{cls.__name__}.{f.name} has no help metadata"
    assert "\n" not in text and len(text) <= 120


def test_show_names_every_field_with_its_help(capsys):
    names = {c.__name__ for c in config_dataclasses()}  # the walk reaches every config dataclass
    assert names == {"Config", "ModelConfig", "TaskConfig", "DataConfig", "TrainConfig", "OptimConfig", "OutputConfig",
                     "CustomTaskConfig", "CustomColumnsConfig"}
    out = show(capsys)  # the defaults: custom_tasks is empty, its entry's fields are shown commented out
    for cls, f in ALL_FIELDS:
        line = re.compile(rf"^[# ]*{f.name}:( \S.*)?  # {re.escape(f.metadata['help'])}$", re.M)
        assert line.search(out), f"{cls.__name__}.{f.name} with its help is not in the output"
    # the values themselves, e.g. the peak lr of the resolved config (default mode finetune: 1e-5)
    assert re.search(r"^  lr: 1\.0e-05  # ", out, re.M)
    assert re.search(r"^  schedule: constant  # ", out, re.M)


@pytest.mark.parametrize("preset", ["default.yaml", "quick.yaml", "best.yaml", None])
@pytest.mark.parametrize("overrides", [[], ["--optim.lr=2e-5", "--tasks.sst.batch_size=8", "--train.compile=on"]])
def test_show_loads_back_to_the_resolved_config(capsys, preset, overrides):
    args = (["--config", str(CONFIGS / preset)] if preset else []) + overrides
    out = show(capsys, *args)
    expected = resolve(load_config(CONFIGS / preset if preset else None, [o[2:] for o in overrides]))
    assert from_dict(yaml.safe_load(out)) == expected
    if overrides:
        assert expected.optim.lr == 2e-5 and expected.tasks["sst"].batch_size == 8 and expected.train.compile == "on"
    else:
        assert expected.optim.lr is not None  # resolved: no null lr printed


def test_show_quotes_hostile_strings_so_they_load_back(tmp_path, capsys):
    """Strings with YAML syntax, line breaks (also NEL and U+2028), YAML 1.1 booleans and numbers
    as text, and a custom task whose name and columns need quoting."""
    raw = {
        "name": "a: b # not a comment",
        "model": {"encoder": "/models/é x/[bert], {v2}\u2028two\x85three"},
        "data": {"dir": "line one\nline two\ttab"},
        "tasks": {"sst": {"head": "on"}, "my task: #1": {"phrases_file": "null"}},
        "custom_tasks": {
            "my task: #1": {
                "kind": "classification",
                "label_names": ["a, b", "c#d", "off", "1e-5", "- x", "'q'", '"dq"', ""],
                "files": {"train": "data dir/train #1.csv", "dev": "dev,1.jsonl"},
                "columns": {"text": "text: a", "text_b": "{b}", "id": "yes"},
            }
        },
    }
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = resolve(load_config(path))
    assert cfg.custom_tasks["my task: #1"].label_names[2] == "off"  # a string, not False
    out = show(capsys, "--config", str(path))
    assert from_dict(yaml.safe_load(out)) == cfg
    # one physical line per field: the line breaks inside strings are escapes
    assert sum(1 for ln in out.splitlines() if ln.lstrip().startswith("encoder:")) == 1
    assert len(out.splitlines()) == 1 + sum(1 for _ in _count_lines(cfg))


def _count_lines(cfg):
    """One line per field and per map entry (what the printout holds, besides its header line)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        yield f.name
        if dataclasses.is_dataclass(value):
            yield from _count_lines(value)
        elif isinstance(value, dict) and value and dataclasses.is_dataclass(next(iter(value.values()))):
            for entry in value.values():
                yield "entry"
                yield from _count_lines(entry)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--optim.schedule=polynomial"], "error: optim.schedule: 'polynomial' is not one of"),
        (["--optim.lrr=1"], "error: unknown config key optim.lrr"),
        (["--config", "/nonexistent/c.yaml"], "error: /nonexistent/c.yaml: config file not found"),
        (["stray"], "error: unrecognised argument 'stray'"),
    ],
)
def test_show_user_mistakes_are_one_line_exit_2(capsys, argv, message):
    code, out, err = run_main(capsys, "config", "show", *argv)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1


# ----------------------------------------------------------------------------------------------
# config schema


def test_schema_describes_every_field(schema):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for cls, f in ALL_FIELDS:
        obj = schema if cls is Config else schema["$defs"][cls.__name__]
        assert obj["additionalProperties"] is False
        assert obj["properties"][f.name]["description"] == f.metadata["help"], f"{cls.__name__}.{f.name}"
    optim = schema["$defs"]["OptimConfig"]["properties"]
    assert optim["schedule"]["enum"] == ["constant", "linear", "cosine"] and optim["schedule"]["default"] == "constant"
    assert optim["betas"]["default"] == [0.9, 0.999]
    for key, entry in (("tasks", "TaskConfig"), ("custom_tasks", "CustomTaskConfig")):
        entries = schema["properties"][key]["additionalProperties"]
        assert entries["anyOf"] == [{"$ref": f"#/$defs/{entry}"}, {"type": "null"}]


def test_schema_accepts_every_preset(schema):
    files = presets()
    assert len(files) >= 3 + 14 and not [p for p in files if p.parent.name == "beyond"]
    v = validator(schema)
    for path in files:
        raw = yaml.safe_load(path.read_text())
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in v.iter_errors(raw)]
        assert errors == [], path
        assert list(v.iter_errors(to_dict(resolve(load_config(path))))) == [], path  # the full form too


def test_schema_accepts_a_custom_task_and_yaml_1_1_spellings(schema):
    raw = yaml.safe_load(
        "optim: {lr: 1e-5, betas: [0.9, 0.99]}\n"  # PyYAML reads 1e-5 as a string; minbert takes it
        "train: {compile: on, cuda_graphs: off}\n"  # YAML 1.1 booleans for the on/off choices
        "tasks: {sst: , pairs: {batch_size: 8}}\n"  # an entry with no value: its defaults
        "custom_tasks:\n"
        "  pairs: {kind: classification, input: pair, label_names: [different, same],\n"
        "          files: {train: t.csv, dev: d.csv}, columns: {text: a, text_b: b}}\n"
    )
    assert raw["optim"]["lr"] == "1e-5" and raw["train"]["compile"] is True and raw["tasks"]["sst"] is None
    assert from_dict(raw).optim.lr == 1e-5  # minbert accepts all of it
    assert list(validator(schema).iter_errors(raw)) == []


@pytest.mark.parametrize(
    "text,where",
    [
        ("colour: red\n", ""),
        ("optim: {lrr: 0.1}\n", "optim"),
        ("tasks: {sst: {batchsize: 8}}\n", "tasks.sst"),
        ("custom_tasks: {x: {kind: regression, columns: {txt: a}}}\n", "custom_tasks.x.columns"),
        ("optim: {schedule: polynomial}\n", "optim.schedule"),
        ("train: {amp: on}\n", "train.amp"),  # amp has no "on": YAML's True is refused
        ("tasks: {sst: {pooling: max}}\n", "tasks.sst.pooling"),
        ("train: {epochs: ten}\n", "train.epochs"),
        ("optim: {betas: [0.9]}\n", "optim.betas"),
        ("optim: {lr: abc}\n", "optim.lr"),
    ],
)
def test_schema_rejects_what_minbert_rejects(schema, text, where):
    raw = yaml.safe_load(text)
    with pytest.raises(ConfigError):
        from_dict(raw)
    errors = list(validator(schema).iter_errors(raw))
    assert errors, text
    assert where in error_paths(errors), [(list(e.absolute_path), e.message) for e in errors]


def error_paths(errors) -> set[str]:
    """The dotted instance paths of the errors and of the errors under them (anyOf branches)."""
    out = set()
    for e in errors:
        out.add(".".join(map(str, e.absolute_path)))
        out |= error_paths(e.context or [])
    return out


def test_schema_command_prints_and_writes_the_schema(tmp_path, capsys, schema):
    code, out, err = run_main(capsys, "config", "schema")
    assert code == 0 and json.loads(out) == schema
    target = tmp_path / "sub" / "minbert.schema.json"
    code, out, err = run_main(capsys, "config", "schema", "--output", str(target))
    assert code == 0 and out == ""
    assert json.loads(target.read_text()) == schema
    assert sorted(p.name for p in target.parent.iterdir()) == ["minbert.schema.json"]  # no temp file left


@pytest.mark.parametrize("case", ["directory", "stray"])
def test_schema_command_mistakes_are_one_line_exit_2(tmp_path, capsys, case):
    argv = ["--output", str(tmp_path)] if case == "directory" else ["--optim.lr=1"]
    code, out, err = run_main(capsys, "config", "schema", *argv)
    assert code == 2 and out == "" and err.count("\n") == 1
    expected = f"error: --output {tmp_path}: cannot write" if case == "directory" else "error: unrecognised argument"
    assert err.startswith(expected)
    assert sorted(tmp_path.iterdir()) == []  # nothing left behind (the temp file goes next to the target)
    assert [p for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.")] == []


# ----------------------------------------------------------------------------------------------
# train --help, and no torch


def test_train_help_names_the_sections_and_points_to_config_show(capsys):
    code, out, _ = run_main(capsys, "train", "--help")
    assert code == 0
    for name in ("name", "model", "tasks.<name>", "data", "train", "optim", "output", "custom_tasks.<name>"):
        assert re.search(rf"^  {re.escape(name)} +\S", out, re.M), name
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        key = f"{f.name}.<name>" if typing.get_origin(hints[f.name]) is dict else f.name
        assert re.search(rf"^  {re.escape(key)} +{re.escape(f.metadata['help'])}$", out, re.M), key
    assert "minbert config show" in out and "minbert config schema" in out


@pytest.mark.parametrize(
    "argv",
    [["config", "show", "--config", str(CONFIGS / "best.yaml"), "--optim.lr=2e-5"], ["config", "schema"]],
)
def test_config_commands_never_import_torch(tmp_path, argv):
    argv = argv + (["--output", str(tmp_path / "s.json")] if argv[1] == "schema" else [])
    probe = (
        "import sys, json\n"
        "from minbert.cli import main\n"
        f"code = main({argv!r})\n"
        "print('RESULT=' + json.dumps([code, sorted(sys.modules)]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    code, modules = json.loads(p.stdout.splitlines()[-1][len("RESULT="):])
    assert code == 0 and "minbert.config" in modules
    assert [m for m in modules if m == "torch" or m.startswith("torch.")] == []
    if argv[1] == "schema":
        assert json.loads((tmp_path / "s.json").read_text())["title"] == "minbert config"
    else:
        assert "  lr: 2.0e-05  # " in p.stdout
