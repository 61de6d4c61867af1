"""model.packing in training: pack_plan's gather/scatter plan, how the option resolves per
device, and a packed run (eager varlen reference on CPU) equal to the padded run: the same
per-task outputs and gradients for every registered task, and the same dev scores after training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minbert.config import PACK_MULTIPLE, from_dict, load_config, runtime_settings
from minbert.errors import ConfigError
from minbert.model.multitask import build_model, step_pack_plan
from minbert.model.packing import filler_pieces, pack_plan, plan_max_seqlen, token_bucket
from minbert.tasks.splits import load_splits
from minbert.tasks.table import task_table
from minbert.training.trainer import train
from minbert_testkit import base_config


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 9), min_size=1, max_size=6), extra=st.integers(0, 3), mult=st.integers(1, 9))
def test_pack_plan_gathers_every_real_token_once(lengths, extra, mult):
    T = max(lengths) + extra  # (an empty row: test_packing.py's test_pack_refuses_an_empty_sequence)
    B = len(lengths)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    index, cu = pack_plan(mask, mult)
    n = sum(lengths)
    N = index.shape[0]
    k = cu.shape[0] - B - 1  # the filler's pieces
    assert k == filler_pieces(mult, T) >= 1
    assert N % mult == 0 and n + k <= N <= n + k + mult - 1  # a filler of k..k + mult - 1 tokens
    want = [r * T + c for r in range(B) for c in range(lengths[r])]
    assert index[:n].tolist() == want and (index[n:] == B * T).all()
    assert cu.dtype == torch.int32 and cu.tolist()[: B + 1] == [sum(lengths[:i]) for i in range(B + 1)]
    pieces = torch.diff(cu[B:]).tolist()
    assert sum(pieces) == N - n and min(pieces) >= 1
    # no sequence is longer than the kernels' max_seqlen, and the filler gets the fewest pieces
    # for that: with k - 1 pieces, the longest filler (mult + k - 2 tokens) would not fit
    assert max(lengths + pieces) <= plan_max_seqlen(T) == max(T, 2)
    assert k == 1 or -(-(mult + k - 2) // (k - 1)) > plan_max_seqlen(T)
    with pytest.raises(ValueError, match="multiple_of 0"):
        pack_plan(mask, 0)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 100_000), smallest=st.sampled_from([1, 16, 64]), largest=st.sampled_from([128, 512]))
def test_token_buckets_are_few_and_waste_at_most_an_eighth(n, smallest, largest):
    m = token_bucket(n, smallest, largest)
    assert smallest <= m <= largest and token_bucket(n + 1, smallest, largest) >= m  # clamped, monotone
    padded = -(-n // m) * m
    if smallest * 8 <= n <= largest * 8:  # the filler is under 1/8 of the real tokens
        assert padded - n < m <= n / 8
    # packs of n..2n tokens land in at most 8 + 1 sizes (above 8 x smallest, below 8 x largest)
    if smallest * 8 <= n and 2 * n <= largest * 8:
        sizes = {-(-k // token_bucket(k, smallest, largest)) * token_bucket(k, smallest, largest)
                 for k in range(n, 2 * n + 1, max(1, n // 512))}
        assert len(sizes) <= 9


@pytest.mark.parametrize(
    "overrides, device, expect",
    [
        ([], "cuda", (PACK_MULTIPLE, None)),  # auto by default; amp auto is bf16 on CUDA
        (["model.packing=off"], "cuda", (0, None)),
        (["model.packing=auto"], "cpu", (0, None)),  # no note on a CPU: nothing a user expects there
        (["model.packing=auto", "train.amp=off"], "cuda", (0, "train.amp=bf16")),
        (["model.packing=auto", "train.smart_weight=1"], "cuda", (0, "SMART")),
        (["model.packing=auto", "model.max_length=32"], "cuda", (0, "max_length < 64")),
        (["model.packing=on", "model.attn_implementation=eager"], "cpu", (PACK_MULTIPLE, None)),
        (["model.attn_implementation=eager"], "cpu", (0, None)),  # the eager reference packs only when asked
        (["model.attn_implementation=eager", "train.amp=off"], "cuda", (0, "train.amp=bf16")),
        (["model.attn_implementation=eager"], "cuda", (0, "model.attn_implementation=sdpa")),
    ],
)
def test_packing_resolves_per_device(overrides, device, expect):
    rt = runtime_settings(load_config(None, overrides), device)
    assert rt.pack_multiple == expect[0]
    assert (rt.note is None) if expect[1] is None else (expect[1] in rt.note)
    if rt.pack_multiple:  # rows of one length: the packs alone set the shapes
        assert rt.pad_multiple == load_config(None, overrides).model.max_length


def test_a_compiled_packed_step_keeps_its_cuda_graphs():
    """Compiled, the padded encoder runs without graphs (a new T per batch); the packed one compiles
    once for every token count and its kernels replay inside the graphs."""
    padded = runtime_settings(load_config(None, ["train.compile=on", "model.packing=off"]), "cuda")
    packed = runtime_settings(load_config(None, ["train.compile=on", "model.packing=on"]), "cuda")
    assert (padded.compile, padded.cuda_graphs, padded.pack_multiple) == (True, False, 0)
    assert (packed.compile, packed.cuda_graphs, packed.pack_multiple) == (True, True, PACK_MULTIPLE)


@pytest.mark.parametrize(
    "overrides, why",
    [
        (["model.packing=on"], "a CUDA device or model.attn_implementation=eager"),
        (["model.packing=on", "train.amp=off"], "train.amp=bf16"),
        (["model.packing=on", "model.attn_implementation=eager", "model.max_length=32"], "max_length >= 64"),
    ],
)
def test_packing_on_raises_where_it_cannot_run(overrides, why):
    with pytest.raises(ConfigError, match=why):
        runtime_settings(load_config(None, overrides), "cpu" if "train.amp=off" not in overrides else "cuda")


@pytest.fixture(scope="module")
def setup(tiny_encoder, data_dir):
    raw = base_config(tiny_encoder)
    raw["model"] = {**raw["model"], "attn_implementation": "eager", "hidden_dropout_prob": 0.0,
                    "attention_probs_dropout_prob": 0.0}
    raw["tasks"] = {t: {"train_limit": 24, "dev_limit": 8, "batch_size": 8, "dropout": 0.0}
                    for t in ("sst", "qqp", "sts")}
    raw["tasks"]["sts"]["pair_input"] = "cross"
    cfg = from_dict(raw)
    table = task_table(cfg)
    from minbert.data.tokenizer import Tokenizer

    tok = Tokenizer(str(tiny_encoder), cfg.model.max_length)
    data = load_splits(cfg, data_dir, tok, table, progress=False)
    return cfg, table, data, tok


@pytest.mark.parametrize("tasks", [("sst",), ("qqp",), ("sts",), ("sst", "qqp", "sts")])
def test_one_packed_pass_gives_the_padded_outputs_and_gradients(setup, tiny_encoder, tasks):
    """A step's tasks packed into one encoder pass (step_pack_plan + forward_step) against each
    task's own padded pass: the same outputs, and the same gradients of the summed loss."""
    cfg, table, data, tok = setup
    torch.manual_seed(0)
    model = build_model(cfg, tiny_encoder, tasks=table).train()
    results = []
    for pack in (0, PACK_MULTIPLE):
        pad = cfg.model.max_length if pack else 1
        batches = {t: table[t].collate(data["train"][t], np.arange(8) + i, tok.pad_token_id, pad)
                   for i, t in enumerate(tasks)}
        model.zero_grad(set_to_none=True)
        if pack:
            plan = step_pack_plan(batches, pack, 512)
            rows = sum(b["input_ids"].shape[0] * (2 if "input_ids_b" in b else 1) for b in batches.values())
            T = batches[tasks[0]]["input_ids"].shape[1]
            pieces = plan[1][rows + 1 :] - plan[1][rows:-1]  # the filler's, none longer than a row
            assert pieces.numel() >= 1 and 1 <= int(pieces.min()) and int(pieces.max()) <= T
            assert plan[0].shape[0] % pack == 0
            outs = model.forward_step(batches, plan)
        else:
            outs = {t: model(t, b) for t, b in batches.items()}
        sum(table[t].loss(outs[t], batches[t]["labels"]) for t in tasks).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append(({t: o.detach() for t, o in outs.items()}, grads))
    (out0, g0), (out1, g1) = results
    for t in tasks:
        torch.testing.assert_close(out1[t], out0[t], atol=1e-5, rtol=1e-5)
    assert g0.keys() == g1.keys() and any(n.startswith("encoder.") for n in g0)
    assert {n.split(".")[1] for n in g0 if n.startswith("heads.")} == set(tasks)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("pack", [0, PACK_MULTIPLE])
def test_two_copies_in_one_pass_are_two_independent_dropout_passes(setup, tiny_encoder, pack):
    """forward_copies(.., 2) (R-Drop's two passes as one): without dropout each copy is the
    one-copy output; with dropout the copies differ from each other (their own masks), and in
    expectation over the masks each copy is the dropout-free output."""
    cfg, table, data, tok = setup
    torch.manual_seed(0)
    model = build_model(cfg, tiny_encoder, tasks=table).train()
    pad = cfg.model.max_length  # one T for both tasks: the padded path stacks them too
    batches = {t: table[t].collate(data["train"][t], np.arange(8), tok.pad_token_id, pad) for t in ("sst", "sts")}
    plan1, plan2 = ((step_pack_plan(batches, pack, 512, c) if pack else None) for c in (1, 2))
    if pack:  # the same rows twice: twice the real tokens, the second copy's offsets shifted by the first's
        rows = 16  # sst 8, sts 8 (cross-encoder pairs)
        real = int(plan1[1][rows])
        assert int(plan2[1][2 * rows]) == 2 * real
        assert torch.equal(plan2[1][rows : 2 * rows + 1] - real, plan1[1][: rows + 1])
    one = model.forward_step(batches, plan1)
    two = model.forward_copies(batches, plan2, 2)
    assert len(two) == 2
    for t in batches:
        for copy in two:
            torch.testing.assert_close(copy[t], one[t], atol=1e-5, rtol=1e-5)
    for m in model.modules():  # dropout on everywhere: the encoder's and the heads'
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.3
    with torch.no_grad():
        draws = [model.forward_copies(batches, plan2, 2) for _ in range(200)]
    for t in batches:
        a, b = (torch.stack([d[i][t].float() for d in draws]) for i in (0, 1))
        assert not torch.allclose(a[0], b[0])  # the copies' masks differ
        # dropout is unbiased per unit, not through the network: only a loose check on the mean
        assert (a.mean(0) - b.mean(0)).abs().max() < 0.5 * a.std(0).max() + 1e-3


def _tiny_run(tiny_encoder, data_dir, run_dir, packing: str, options: dict, tmp_path_factory):
    """A tiny deterministic run (no dropout): its dev scores and its logged per-step task losses
    and gradient norms."""
    from minbert_testkit import para_definition, para_dir

    raw = json.loads(json.dumps(base_config(tiny_encoder)))
    tasks = {t: {"train_limit": 24, "dev_limit": 8, "batch_size": 8, "dropout": 0.0} for t in ("sst", "qqp", "sts")}
    doc = {**raw, "model": {**raw["model"], "attn_implementation": "eager", "packing": packing,
                            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
           "tasks": tasks, "data": {"pad_to_multiple_of": 1},
           "train": {**raw["train"], "log_every": 1, **options.get("train", {})}}
    if options.get("custom"):
        doc["custom_tasks"] = {"para": para_definition(para_dir(tmp_path_factory))}
        tasks["para"] = {"batch_size": 8, "dropout": 0.0}
    run = train(from_dict(doc), run_dir=run_dir, data_dir=data_dir, progress=False)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [{k: v for k, v in r.items() if k.startswith("loss/") or k == "grad_norm"} for r in records if "lr" in r]
    return run.summary["dev"], steps


@pytest.mark.parametrize(
    "options",
    [{}, {"train": {"rdrop_alpha": 1.0}}, {"train": {"pcgrad": True}}, {"train": {"routine": "sampled"}},
     {"custom": True}, {"train": {"compile": "on"}}],
    ids=["plain", "rdrop", "pcgrad", "sampled", "custom-task", "compiled"],
)
def test_a_packed_run_trains_as_the_padded_run(tiny_encoder, data_dir, tmp_path, tmp_path_factory, options):
    """Step for step the same losses and the same dev scores, with the features a run may use."""
    (dev0, loss0), (dev1, loss1) = (
        _tiny_run(tiny_encoder, data_dir, tmp_path / packing, packing, options, tmp_path_factory)
        for packing in ("off", "on")
    )
    assert len(loss0) == len(loss1) >= 3
    for a, b in zip(loss0, loss1, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], abs=1e-4, rel=1e-4), k
    assert dev0.keys() == dev1.keys()
    for k in dev0:
        assert dev1[k] == pytest.approx(dev0[k], abs=1e-4), k


def test_packed_evaluation_predicts_as_padded_evaluation(setup, tiny_encoder):
    """With pack_eval the model packs each evaluation batch itself: the same dev outputs."""
    from minbert.inference.evaluate import predict_split

    cfg, table, data, tok = setup
    torch.manual_seed(0)
    model = build_model(cfg, tiny_encoder, tasks=table)
    calls, packed = [], model.encoder.forward_packed
    model.encoder.forward_packed = lambda p: calls.append(p.num_real) or packed(p)
    for name in ("sst", "qqp", "sts"):
        split = data["dev"][name]
        model.pack_eval = False
        want = predict_split(model, table[name], split, torch.device("cpu"), 4, pad_id=tok.pad_token_id)
        model.pack_eval = True
        got = predict_split(model, table[name], split, torch.device("cpu"), 4, pad_id=tok.pad_token_id)
        assert got.ids == want.ids and len(got.ids) == len(split)
        assert sum(calls) == len(split) * (2 if name == "qqp" else 1)  # every row went through the packed path
        calls.clear()
        np.testing.assert_allclose(got.outputs, want.outputs, atol=1e-5, rtol=1e-5)
    model.pack_eval = False
