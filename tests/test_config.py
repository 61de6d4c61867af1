"""Config loading: YAML files, dotted overrides, validation, immutability, round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from minbert.config import (
    Config,
    OptimConfig,
    TaskConfig,
    apply_overrides,
    dump_yaml,
    from_dict,
    load_config,
    replace,
    to_dict,
)
from minbert.errors import ConfigError, MinbertError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
FILES = ["default.yaml", "quick.yaml"]


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_contains(actual, expected, where=""):
    """Every key/value of the YAML mapping ``expected`` is in the config dict ``actual``."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        for k, v in expected.items():
            assert k in actual, f"{where}.{k}"
            assert_contains(actual[k], v, f"{where}.{k}")
    else:
        assert actual == expected, where


# ----------------------------------------------------------------------------------------------
# the shipped config files


@pytest.mark.parametrize("name", FILES)
def test_load_shipped_config(name):
    path = CONFIGS / name
    raw = yaml.safe_load(path.read_text())
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.name == raw.get("name", path.stem)
    assert_contains(to_dict(cfg), raw)
    # sections are the typed dataclasses, tasks are TaskConfigs
    assert isinstance(cfg.optim, OptimConfig)
    assert set(cfg.tasks) == set(raw["tasks"])
    assert all(isinstance(t, TaskConfig) for t in cfg.tasks.values())
    assert isinstance(cfg.optim.lr, float) and isinstance(cfg.train.epochs, int)
    assert isinstance(cfg.optim.betas, tuple)


def test_quick_differs_from_default():
    d, q = load_config(CONFIGS / "default.yaml"), load_config(CONFIGS / "quick.yaml")
    raw_q = yaml.safe_load((CONFIGS / "quick.yaml").read_text())
    assert q.train.epochs == raw_q["train"]["epochs"] != d.train.epochs
    assert q.optim.lr == raw_q["optim"]["lr"] != d.optim.lr
    for t in raw_q["tasks"]:
        assert q.tasks[t].train_limit == raw_q["tasks"][t]["train_limit"]
        assert d.tasks[t].train_limit is None


def test_defaults_without_file():
    assert load_config(None) == Config()
    assert from_dict({}) == Config() and from_dict(None) == Config()


def test_name_defaults_to_file_stem(tmp_path):
    cfg = load_config(write(tmp_path, "train: {epochs: 2}\n", "my-run.yaml"))
    assert cfg.name == "my-run" and cfg.train.epochs == 2


# ----------------------------------------------------------------------------------------------
# overrides


def test_dotted_overrides():
    base = load_config(CONFIGS / "default.yaml")
    cfg = load_config(
        CONFIGS / "default.yaml",
        ["optim.lr=2e-5", "tasks.sst.batch_size=8", "--train.epochs=3", "data.strict=true", "optim.betas=[0.8, 0.99]"],
    )
    assert cfg.optim.lr == 2e-5 and isinstance(cfg.optim.lr, float)
    assert cfg.tasks["sst"].batch_size == 8
    assert cfg.train.epochs == 3
    assert cfg.data.strict is True
    assert cfg.optim.betas == (0.8, 0.99)
    # everything else is untouched
    assert cfg.tasks["qqp"] == base.tasks["qqp"] and cfg.tasks["sts"] == base.tasks["sts"]
    assert replace(cfg.tasks["sst"], batch_size=base.tasks["sst"].batch_size) == base.tasks["sst"]
    assert cfg.model == base.model and cfg.output == base.output


@pytest.mark.parametrize(
    "override,attr,value",
    [
        ("optim.lr=1.5e-4", ("optim", "lr"), 1.5e-4),
        ("optim.lr=3e-5", ("optim", "lr"), 3e-5),
        ("optim.lr=0.001", ("optim", "lr"), 0.001),
        ("optim.weight_decay=0", ("optim", "weight_decay"), 0.0),
        ("train.max_grad_norm=1.0", ("train", "max_grad_norm"), 1.0),
        ("train.max_grad_norm=null", ("train", "max_grad_norm"), None),
        ("train.routine=sequential", ("train", "routine"), "sequential"),
        ("output.format=cs224n", ("output", "format"), "cs224n"),
        ("name=exp1", ("name",), "exp1"),
    ],
)
def test_override_values(override, attr, value):
    obj = load_config(None, [override])
    for a in attr:
        obj = getattr(obj, a)
    assert obj == value and type(obj) is type(value)


def test_override_creates_missing_section():
    cfg = load_config(None, ["tasks.sst.pooling=mean"])
    assert cfg.tasks["sst"].pooling == "mean"


def test_apply_overrides_does_not_mutate_input():
    raw = {"optim": {"lr": 1.0}}
    out = apply_overrides(raw, ["optim.lr=2.0", "train.epochs=1"])
    assert raw == {"optim": {"lr": 1.0}}
    assert out == {"optim": {"lr": 2.0}, "train": {"epochs": 1}}


def test_override_without_value_is_error():
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(None, ["optim.lr"])


def test_an_override_mapping_with_a_key_twice_names_the_key():
    """A YAML mapping given twice the same key is refused, as in a config file, instead of being
    kept as a string (what an override that is not YAML becomes)."""
    with pytest.raises(ConfigError) as ei:
        load_config(None, ["--tasks.sst={dropout: 0.1, dropout: 0.2}"])
    assert str(ei.value) == "override tasks.sst: duplicate key 'dropout'"
    assert load_config(None, ["--tasks.sst={dropout: 0.2}"]).tasks["sst"].dropout == 0.2


@pytest.mark.parametrize("path", [None, CONFIGS / "default.yaml"])
def test_override_into_a_value_is_error(path):
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        load_config(path, ["optim.lr.x=3"])


# ----------------------------------------------------------------------------------------------
# unknown keys, wrong types, Literal violations: ConfigError naming the key


@pytest.mark.parametrize(
    "text,key",
    [
        ("colour: red\n", "colour"),
        ("optim: {lrr: 0.1}\n", "optim.lrr"),
        ("train: {epochs: 2, epoch: 3}\n", "train.epoch"),
        ("tasks: {sst: {batchsize: 8}}\n", "tasks.sst.batchsize"),
        ("model: {hidden: 5}\n", "model.hidden"),
    ],
)
def test_unknown_key_in_file(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    msg = str(ei.value)
    assert f"unknown config key {key}" in msg
    assert str(path) in msg and "\n" not in msg


@pytest.mark.parametrize(
    "override,key",
    [
        ("colour=red", "colour"),
        ("optim.lrr=0.1", "optim.lrr"),
        ("tasks.qqp.batchsize=8", "tasks.qqp.batchsize"),
        ("data.folder=x", "data.folder"),
    ],
)
def test_unknown_key_via_override(override, key):
    with pytest.raises(ConfigError, match=f"unknown config key {key}"):
        load_config(CONFIGS / "default.yaml", [override])


@pytest.mark.parametrize(
    "text,key",
    [
        ("train: {epochs: ten}\n", "train.epochs"),
        ('optim: {lr: "abc"}\n', "optim.lr"),
        ("optim: {lr: true}\n", "optim.lr"),
        ("train: {epochs: 2.5}\n", "train.epochs"),
        ("train: {epochs: true}\n", "train.epochs"),
        ("tasks: {sst: {batch_size: 1.5}}\n", "tasks.sst.batch_size"),
        ("tasks: {sts: {dropout: high}}\n", "tasks.sts.dropout"),
        ("data: {strict: maybe}\n", "data.strict"),
        ("model: {encoder: 3}\n", "model.encoder"),
        ("optim: {betas: [0.9]}\n", "optim.betas"),
        ("optim: {betas: [0.9, x]}\n", "optim.betas[1]"),
        ("optim: 5\n", "optim"),
        ("train: {max_grad_norm: big}\n", "train.max_grad_norm"),
    ],
)
def test_wrong_type(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    msg = str(ei.value)
    assert f"{key}:" in msg
    assert str(path) in msg


@pytest.mark.parametrize("override,key", [("train.epochs=ten", "train.epochs"), ("optim.lr=abc", "optim.lr")])
def test_wrong_type_via_override(override, key):
    with pytest.raises(ConfigError, match=f"{key}: expected"):
        load_config(None, [override])


@pytest.mark.parametrize(
    "override,key,value",
    [
        ("train.routine=serial", "train.routine", "serial"),
        ("train.mode=partial", "train.mode", "partial"),
        ("tasks.sst.pooling=max", "tasks.sst.pooling", "max"),
        ("tasks.sts.pair_input=both", "tasks.sts.pair_input", "both"),
        ("optim.name=sgd", "optim.name", "sgd"),
        ("optim.schedule=polynomial", "optim.schedule", "polynomial"),
        ("output.format=csv", "output.format", "csv"),
        ("model.attn_implementation=flash", "model.attn_implementation", "flash"),
    ],
)
def test_literal_violation(override, key, value):
    with pytest.raises(ConfigError) as ei:
        load_config(None, [override])
    msg = str(ei.value)
    assert msg.startswith(f"{key}: {value!r} is not one of")
    # the allowed values are listed
    field = key.rsplit(".", 1)[1]
    section = key.split(".")[0]
    default = getattr(getattr(Config(), section) if section != "tasks" else TaskConfig(), field)
    assert repr(default) in msg


def test_config_errors_are_minbert_errors(tmp_path):
    assert issubclass(ConfigError, MinbertError)


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found"):
        load_config(path)


def test_invalid_yaml_names_line(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 2\n  seed: [1, 2\n")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert str(path) in str(ei.value) and "line" in str(ei.value) and "YAML" in str(ei.value)


def test_a_task_override_without_a_tasks_section_makes_one_naming_that_task(tmp_path):
    # no tasks section in the file: the override makes one, so the run trains the named task alone
    assert list(load_config(None, ["tasks.sst.batch_size=8"]).tasks) == ["sst"]
    assert list(load_config(None, []).tasks) == ["sst", "qqp", "sts"]
    path = write(tmp_path, "tasks:\n  sst: {batch_size: 4}\n  sts: {}\n")
    got = load_config(path, ["tasks.sst.batch_size=8"])
    assert {n: t.batch_size for n, t in got.tasks.items()} == {"sst": 8, "sts": 32}


def test_unreadable_config_files_give_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: \xff\xfe bad\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not UTF-8 text \(byte 6: invalid start byte\)$"):
        load_config(bad)
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml: not a config: nested too deeply$"):
        load_config(deep)


def test_non_mapping_file(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


# ----------------------------------------------------------------------------------------------
# frozen and round trip


def test_config_is_frozen():
    cfg = load_config(CONFIGS / "default.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.tasks["sst"].batch_size = 1
    assert cfg.optim.lr == yaml.safe_load((CONFIGS / "default.yaml").read_text())["optim"]["lr"]


def test_replace_returns_a_copy():
    cfg = Config()
    new = replace(cfg, optim=replace(cfg.optim, lr=3.0))
    assert new.optim.lr == 3.0 and cfg.optim.lr == OptimConfig().lr


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("overrides", [[], ["optim.lr=2e-5", "tasks.sst.batch_size=8", "train.max_grad_norm=1.0"]])
def test_dump_yaml_round_trip(tmp_path, name, overrides):
    cfg = load_config(CONFIGS / name, overrides)
    text = dump_yaml(cfg)
    again = load_config(write(tmp_path, text, "dumped.yaml"))
    assert again == cfg
    assert dump_yaml(again) == text
    assert from_dict(yaml.safe_load(text)) == cfg


def test_dump_yaml_round_trip_defaults(tmp_path):
    text = dump_yaml(Config())
    assert load_config(write(tmp_path, text)) == Config()


def test_on_off_values_survive_yaml_booleans():
    """YAML 1.1 reads `off` as False: a choice that has "off" (train.amp) still gets "off"."""
    from minbert.config import load_config

    cfg = load_config(None, ["train.amp=off", "train.cuda_graphs=off", "train.compile=on"])
    assert (cfg.train.amp, cfg.train.cuda_graphs, cfg.train.compile) == ("off", "off", "on")
    from minbert.errors import ConfigError

    with pytest.raises(ConfigError, match="train.amp: True is not one of"):
        load_config(None, ["train.amp=on"])  # amp has no "on"


# ----------------------------------------------------------------------------------------------
# rules of a training run: checked when a config is loaded; settings resolved for a device


TRAINING_RULES = {
    "epochs": (["train.epochs=0"], "train.epochs and train.grad_accum must be >= 1"),
    "grad_accum": (["train.grad_accum=0"], "train.epochs and train.grad_accum must be >= 1"),
    "seed": (["train.seed=-1"], "train.seed must be in 0..2**32 - 1 (numpy's seed range), got -1"),
    "seed range": (
        ["train.seed=4294967296"], "train.seed must be in 0..2**32 - 1 (numpy's seed range), got 4294967296"
    ),
    "max_steps": (["train.max_steps=0"], "train.max_steps must be >= 1 (or null), got 0"),
    "eval_every": (
        ["train.eval_every=-1"],
        "train.eval_every must be >= 0 (optimizer steps between dev evaluations; 0: epoch ends only), got -1",
    ),
    "max_length": (["model.max_length=2"], "model.max_length 2 is too small (at least 3: [CLS] x [SEP])"),
    "freeze_layers": (
        ["train.freeze_layers=-2"],
        "train.freeze_layers -2: must be -1 (embeddings only), 0 (nothing) or k >= 1 "
        "(embeddings + the first k encoder layers)",
    ),
    "head_layers": (
        ["tasks.sts.head_layers=-1"], "tasks.sts.head_layers -1: must be >= 0 (extra layers of the cosine head)"
    ),
}


RANGE_RULES = {  # an override outside its range -> the start of the one-line error
    "train.max_grad_norm=-1": "train.max_grad_norm must be a finite number > 0 (or null: no clipping), got -1.0",
    "train.max_grad_norm=.nan": "train.max_grad_norm must be a finite number > 0 (or null: no clipping), got nan",
    "train.early_stopping_patience=0": "train.early_stopping_patience must be >= 1 (epochs without improvement",
    "train.eval_batch_size=0": "train.eval_batch_size must be >= 1, got 0",
    "train.log_every=-1": "train.log_every must be >= 0 (0 and 1: every step), got -1",
    "train.checkpoint_every=-1": "train.checkpoint_every must be >= 0 (0: epoch ends only), got -1",
    "train.average_last=-1": "train.average_last must be >= 0 (0: off), got -1",
    "train.rdrop_alpha=-1": "train.rdrop_alpha must be a finite number >= 0, got -1.0",
    "train.rdrop_alpha=.nan": "train.rdrop_alpha must be a finite number >= 0, got nan",
    "train.smart_weight=-0.5": "train.smart_weight must be a finite number >= 0, got -0.5",
    "train.smart_eps=.inf": "train.smart_eps must be a finite number >= 0, got inf",
    "optim.eps=.nan": "optim.eps must be a finite number > 0, got nan",
    "optim.eps=0": "optim.eps must be a finite number > 0, got 0.0",
    "optim.layer_lr_decay=1e300": "optim.layer_lr_decay must be in (0, 1] (1.0: off), got 1e+300",
    "optim.weight_decay=-0.1": "optim.weight_decay must be a finite number >= 0, got -0.1",
    "optim.layer_lr_decay=0": "optim.layer_lr_decay must be in (0, 1] (1.0: off), got 0.0",
    "optim.betas=[0.9, 1.0]": "optim.betas must be two numbers in [0, 1), got (0.9, 1.0)",
    "optim.betas=[-0.1, 0.9]": "optim.betas must be two numbers in [0, 1), got (-0.1, 0.9)",
    "name=../elsewhere": "name must be a folder name (the run folder runs/<name>: no / or \\), got '../elsewhere'",
    "name=/abs": "name must be a folder name (the run folder runs/<name>: no / or \\), got '/abs'",
    "name=''": "name must be a folder name (the run folder runs/<name>: no / or \\), got ''",
}


@pytest.mark.parametrize("override", sorted(RANGE_RULES))
def test_a_number_outside_its_range_or_a_name_that_is_no_folder_is_refused_when_loaded(override):
    with pytest.raises(ConfigError) as ei:
        load_config(None, [override])
    assert str(ei.value).startswith(RANGE_RULES[override])


EDGES = {  # an override at the edge of its range -> (section, key, the value loaded)
    "train.max_grad_norm=1e-6": ("train", "max_grad_norm", 1e-6),
    "train.early_stopping_patience=1": ("train", "early_stopping_patience", 1),
    "optim.betas=[0, 0.999]": ("optim", "betas", (0.0, 0.999)),
    "optim.layer_lr_decay=0.01": ("optim", "layer_lr_decay", 0.01),
    "optim.layer_lr_decay=1": ("optim", "layer_lr_decay", 1.0),
    "optim.eps=1e-12": ("optim", "eps", 1e-12),
    "train.log_every=0": ("train", "log_every", 0),
    "optim.weight_decay=0": ("optim", "weight_decay", 0.0),
}


@pytest.mark.parametrize("override", sorted(EDGES))
def test_the_edges_of_those_ranges_load(override):
    section, key, want = EDGES[override]
    assert getattr(getattr(load_config(None, [override]), section), key) == want
    assert load_config(None, ["name=exp-1.b"]).name == "exp-1.b"


@pytest.mark.parametrize("case", sorted(TRAINING_RULES))
def test_training_rules_are_checked_when_a_config_is_loaded(case):
    overrides, message = TRAINING_RULES[case]
    with pytest.raises(ConfigError) as ei:
        load_config(None, overrides)
    assert str(ei.value) == message


def test_training_rules_hold_for_configs_built_in_code():
    from minbert.config import validate

    with pytest.raises(ConfigError, match="^tasks: at least one task is needed$"):
        from_dict({"tasks": {}})
    with pytest.raises(ConfigError, match="^tasks: at least one task is needed$"):
        validate(replace(Config(), tasks={}))
    with pytest.raises(ConfigError, match=r"^train.seed must be in 0\.\.2\*\*32 - 1 \(numpy's seed range\), got -3$"):
        validate(replace(Config(), train=replace(Config().train, seed=-3)))
    edge = load_config(None, ["train.eval_every=1", "model.max_length=3", "train.freeze_layers=-1",
                              "train.max_steps=1"])
    assert (edge.train.eval_every, edge.model.max_length, edge.train.freeze_layers) == (1, 3, -1)


@pytest.mark.parametrize(
    "overrides, device, world, expect",
    [
        # (amp, compile, cuda_graphs, flat_sync, pad_multiple)
        ([], "cpu", 1, (False, False, False, False, 1)),
        ([], "cuda", 1, (True, False, True, False, 16)),  # auto: bf16 and CUDA graphs, batches padded to 16
        (["train.compile=auto"], "cuda", 1, (True, True, False, False, 1)),  # compiled: no graphs
        (["train.compile=auto"], "cpu", 1, (False, False, False, False, 1)),
        (["train.amp=bf16"], "cpu", 1, (True, False, False, False, 1)),
        (["train.amp=off", "data.pad_to_multiple_of=8"], "cuda", 1, (False, False, True, False, 8)),
        (["train.pcgrad=true"], "cuda", 1, (True, False, False, False, 1)),  # PCGrad needs per-task gradients
        ([], "cuda", 2, (True, False, True, True, 16)),  # torchrun: graphs with the flat all-reduce
        (["train.grad_sync=ddp"], "cuda", 2, (True, False, False, False, 1)),
        (["train.grad_sync=flat"], "cpu", 2, (False, False, False, True, 1)),
    ],
)
def test_runtime_settings_resolve_auto_choices_for_the_device(overrides, device, world, expect):
    """The padded path (model.packing=off); how packing resolves: tests/test_packed_training.py."""
    from minbert.config import RuntimeSettings, runtime_settings

    cfg = load_config(None, ["model.packing=off", *overrides])
    assert runtime_settings(cfg, device, world) == RuntimeSettings(*expect)


def test_runtime_settings_refuse_what_cannot_run():
    from minbert.config import runtime_settings

    pcgrad = "train.pcgrad needs train.routine=parallel in a single process (it combines tasks' gradients of one step)"
    with pytest.raises(ConfigError) as ei:
        runtime_settings(load_config(None, ["train.pcgrad=true"]), "cpu", world_size=2)
    assert str(ei.value) == pcgrad
    with pytest.raises(ConfigError) as ei:
        runtime_settings(load_config(None, ["train.pcgrad=true", "train.routine=sequential"]), "cpu", world_size=1)
    assert str(ei.value) == pcgrad
    with pytest.raises(ConfigError) as ei:
        runtime_settings(load_config(None, ["train.cuda_graphs=on"]), "cpu", world_size=1)
    assert str(ei.value) == "train.cuda_graphs=on needs a CUDA device; use auto or off"
    wgs = "model.weight_grad_stream=on needs packed training on CUDA (model.packing); use auto or off"
    for overrides, device in ((["model.weight_grad_stream=on"], "cpu"),
                              (["model.weight_grad_stream=on", "model.packing=off"], "cuda")):
        with pytest.raises(ConfigError) as ei:
            runtime_settings(load_config(None, overrides), device)
        assert str(ei.value) == wgs


@pytest.mark.parametrize("master", [False, True])
@pytest.mark.parametrize("mode", ["auto", "on", "off", True, False])  # YAML 1.1 reads on/off as bools
def test_weight_grad_stream_resolves_to_packed_cuda_training_only(mode, master):
    """on runs in packed CUDA training (and raises elsewhere, see above); auto runs there only with
    master weights, the step it was timed on; off never. The encoder's flag follows the same
    rule but for the device: the encoder itself uses it on CUDA tensors only."""
    from minbert.config import encoder_overrides, runtime_settings

    want_on = mode in ("on", True) or (mode == "auto" and master)
    over = [f"model.weight_grad_stream={str(mode).lower()}", f"optim.master_weights={str(master).lower()}"]
    cfg = load_config(None, over)
    assert cfg.model.weight_grad_stream == {True: "on", False: "off"}.get(mode, mode)
    assert runtime_settings(cfg, "cuda").weight_grad_stream is want_on
    assert runtime_settings(cfg, "cuda").pack_multiple > 0
    assert encoder_overrides(cfg)["weight_grad_stream"] is want_on
    if mode not in ("on", True):
        if not master:  # master weights need bf16 amp, which a CPU runs only when asked for
            assert runtime_settings(cfg, "cpu").weight_grad_stream is False
        assert runtime_settings(load_config(None, [*over, "train.amp=bf16"]), "cpu").weight_grad_stream is False
        unpacked = load_config(None, [*over, "model.packing=off"])
        assert runtime_settings(unpacked, "cuda").weight_grad_stream is False


def test_cuda_graphs_option_resolution():
    from minbert.config import use_cuda_graphs, use_flat_sync

    tc = load_config(None, []).train
    cpu, gpu = "cpu", "cuda"
    single, ddp = 1, 2  # processes: one, or a torchrun job of two
    assert use_cuda_graphs(tc, gpu, single, compiled=False) is True  # auto
    assert use_cuda_graphs(tc, cpu, single, compiled=False) is False
    assert use_cuda_graphs(tc, gpu, single, compiled=True) is False
    assert use_cuda_graphs(tc, gpu, ddp, compiled=False) is True  # torchrun: flat gradient sync
    assert use_flat_sync(tc, ddp, graphs=True) is True and use_flat_sync(tc, ddp, graphs=False) is False
    assert use_flat_sync(tc, single, graphs=True) is False  # nothing to sync in one process
    by_ddp = load_config(None, ["train.grad_sync=ddp"]).train
    assert use_cuda_graphs(by_ddp, gpu, ddp, compiled=False) is False
    assert use_flat_sync(by_ddp, ddp, graphs=False) is False
    ddp_graphs = load_config(None, ["train.grad_sync=ddp", "train.cuda_graphs=on"]).train
    with pytest.raises(ConfigError, match="grad_sync"):
        use_cuda_graphs(ddp_graphs, gpu, ddp, compiled=False)
    on = load_config(None, ["train.cuda_graphs=on", "train.pcgrad=true"]).train
    with pytest.raises(ConfigError, match="a CUDA device.*pcgrad"):
        use_cuda_graphs(on, cpu, single, compiled=False)
    assert use_cuda_graphs(load_config(None, ["train.cuda_graphs=off"]).train, gpu, single, compiled=False) is False



def test_yaml_keys_that_are_not_strings_are_reported_as_unknown_keys(tmp_path):
    """YAML reads 1: and null: as an int and None key; mixed with strings they cannot be sorted."""
    path = tmp_path / "keys.yaml"
    path.write_text("name: x\n1: a\ntrain:\n  null: 2\n")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert str(ei.value) == f"{path}: unknown config key 1 (allowed: custom_tasks, data, model, name, optim, output, " \
                            "tasks, train)"


def test_a_key_given_twice_in_a_config_file_is_refused_with_its_line(tmp_path):
    """PyYAML's own loaders let the later of two equal keys win silently; a config refuses it.
    An anchor merged in (<<: *base) and then overridden is not a duplicate."""
    path = tmp_path / "twice.yaml"
    path.write_text("name: x\ntrain:\n  epochs: 3\n  seed: 1\n  epochs: 5\n")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert str(ei.value) == f"{path}: line 5: duplicate key 'epochs'"
    merged = tmp_path / "merged.yaml"
    merged.write_text("tasks:\n  sst: &t {batch_size: 8, dropout: 0.1}\n  sts:\n    <<: *t\n    batch_size: 4\n")
    cfg = load_config(merged)
    assert (cfg.tasks["sts"].batch_size, cfg.tasks["sts"].dropout, cfg.tasks["sst"].batch_size) == (4, 0.1, 8)


def test_an_alias_of_a_merged_mapping_is_no_duplicate_and_keys_that_name_one_task_twice_are(tmp_path):
    """A merge flattens its mapping in place; reading it again through an alias finds the merged
    key twice, which the file does not hold. 1 and "1" are two YAML keys but one task name."""
    path = tmp_path / "alias.yaml"
    path.write_text("tasks: {sst: {<<: &m {<<: {dropout: 0.1}, dropout: 0.2}, batch_size: 4}, qqp: *m}\n")
    cfg = load_config(path)
    assert (cfg.tasks["sst"].dropout, cfg.tasks["sst"].batch_size, cfg.tasks["qqp"].dropout) == (0.2, 4, 0.2)
    path.write_text("custom_tasks: {}\ntasks: {1: {}, '1': {}}\n")
    with pytest.raises(ConfigError, match=r"tasks: '1' given twice \(as 1 and '1'\)"):
        load_config(path)
    path.write_text("train:\n  ~: 1\n  null: 2\n")
    with pytest.raises(ConfigError, match="line 3: duplicate key 'null'"):
        load_config(path)


def test_an_integer_beyond_floats_range_for_a_number_is_one_config_error():
    with pytest.raises(ConfigError, match=r"optim.lr: 1000000000\d*\.\.\. is too large for a number"):
        load_config(None, [f"optim.lr={10**400}"])
