"""The bf16-weight copy that graphed evaluation runs (minbert.inference.graphs.bf16_copy): its
weights are the model's cast to bf16, it follows in-place updates through refresh_copy, its
encoder ignores an outer autocast, and its outputs stay within bf16 rounding of the fp32 model's."""

from __future__ import annotations

import pytest
import torch

from minbert.config import load_config
from minbert.inference.graphs import Bf16Encoder, bf16_copy, refresh_copy
from minbert.model.multitask import build_model, step_pack_plan
from minbert.tasks.table import task_table


def _model(tiny_encoder, attn: str = "eager"):
    cfg = load_config(None, [f"model.encoder={tiny_encoder}", f"model.attn_implementation={attn}"])
    torch.manual_seed(0)
    return build_model(cfg, str(tiny_encoder), tasks=task_table(cfg)).eval()


def _batch(B: int = 3, T: int = 12, vocab: int = 90) -> dict:
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([12, 7, 4])[:B]
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    ids = torch.randint(5, vocab, (B, T), generator=g) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _pair_batch() -> dict:
    a, b = _batch(), _batch()
    return {**a, **{k + "_b": v.roll(1, 0) for k, v in b.items()}}


def test_copy_holds_the_models_weights_in_bf16_and_follows_updates(tiny_encoder):
    model = _model(tiny_encoder)
    shadow = bf16_copy(model)
    assert isinstance(shadow.encoder, Bf16Encoder)
    names = dict(model.named_parameters())
    shadow_params = dict(shadow.named_parameters())
    assert len(shadow_params) == len(names)
    for name, p in shadow_params.items():
        src = names[name.replace("encoder.inner.", "encoder.")]
        want = torch.bfloat16 if name.startswith("encoder.") else torch.float32
        assert p.dtype == want and not p.requires_grad, name
        assert torch.equal(p, src.detach().to(want)), name
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    stale = shadow.encoder.inner.embeddings.word_embeddings.weight.clone()
    refresh_copy(shadow, model)
    assert not torch.equal(stale, shadow.encoder.inner.embeddings.word_embeddings.weight)
    for name, p in shadow.named_parameters():
        assert torch.equal(p, names[name.replace("encoder.inner.", "encoder.")].detach().to(p.dtype)), name
    with pytest.raises(ValueError, match="do not match"):
        refresh_copy(shadow, _model(tiny_encoder).encoder)


@pytest.mark.parametrize("packed", [False, True])
def test_copy_outputs_are_float32_within_bf16_rounding(tiny_encoder, packed):
    model = _model(tiny_encoder)
    shadow = bf16_copy(model)
    batches = {"sst": _batch(), "sts": _pair_batch()}
    plan = step_pack_plan(batches, 1, 1) if packed else None
    with torch.no_grad():
        ref = model.forward_step(batches, plan)
        got = shadow.forward_step(batches, plan)
    for task in batches:
        assert got[task].dtype == torch.float32
        assert not torch.equal(got[task], ref[task])  # it did run in bf16
        torch.testing.assert_close(got[task], ref[task], atol=5e-2, rtol=5e-2, msg=task)


@pytest.mark.parametrize("packed", [False, True])
def test_copy_encoder_runs_without_the_outer_autocast(tiny_encoder, packed):
    shadow = bf16_copy(_model(tiny_encoder))
    b = _batch()
    args = (b["input_ids"], b["attention_mask"], b["token_type_ids"])
    plan = step_pack_plan({"sst": b}, 1, 1) if packed else None  # packed: Bf16Encoder.forward_packed
    with torch.no_grad():
        plain = shadow.encode(*args, plan)
        with torch.autocast("cpu", dtype=torch.float16):
            inside = shadow.encode(*args, plan)
    for x, y in zip(plain, inside, strict=True):
        assert torch.equal(x, y)
    assert plain.last_hidden_state.dtype == plain.pooler_output.dtype == torch.float32


def test_copy_made_in_inference_mode_refreshes_outside_it(tiny_encoder):
    model = _model(tiny_encoder)
    with torch.inference_mode():
        shadow = bf16_copy(model)
    with torch.no_grad():
        next(model.encoder.parameters()).add_(1.0)
    refresh_copy(shadow, model)  # raises for inference tensors outside inference mode
    assert torch.equal(next(shadow.encoder.parameters()), next(model.encoder.parameters()).detach().bfloat16())


def test_copy_refuses_heads_that_share_an_encoder_parameter(tiny_encoder):
    model = _model(tiny_encoder)
    head = next(m for m in model.heads["sst"].modules() if isinstance(m, torch.nn.Linear))
    head.bias = model.encoder.pooler.dense.bias  # shared: it would turn bf16 inside the head too
    with pytest.raises(ValueError, match="share no parameter"):
        bf16_copy(model)


def test_copy_refuses_an_encoder_compiled_in_place(tiny_encoder):
    model = _model(tiny_encoder)
    model.encoder.forward_packed = torch.compile(model.encoder.forward_packed, dynamic=True)
    with pytest.raises(ValueError, match="not compiled"):
        bf16_copy(model)
