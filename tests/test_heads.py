"""Heads of the paper's experiment table (conv1d, mean, mlp, gelu, compress_expand, cosine),
surgical fine-tuning (train.freeze_layers) and initialisation from another run (train.init_from)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minbert.config import dump_yaml, load_config
from minbert.errors import CheckpointError, ConfigError
from minbert.io import load_weights, save_weights
from minbert.model.heads import HEADS, ConvHead, Encoded, build_head, cosine
from minbert.model.multitask import build_model
from minbert.training.optim import build_optimizer, param_groups
from minbert.training.surgical import freeze_layers, init_from_run

H = 16
STS_RANGE = (0.0, 5.0)
PAPER_HEADS = {
    ("single", "conv1d"),
    ("single", "mean"),
    ("bi", "mlp"),
    ("bi", "gelu"),
    ("bi", "compress_expand"),
    ("bi", "cosine"),
}
SIMILARITY_HEADS = {"compress_expand", "cosine", "sbert_cosine"}  # regression only


def enc(x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
    """Encoded from hidden states (B, T, H); all tokens real unless ``mask`` is given."""
    B, T, _ = x.shape
    mask = torch.ones(B, T, dtype=torch.long) if mask is None else mask
    return Encoded(x, mask, x[:, 0].tanh())


def random_enc(B=6, T=7, scale=1.0, seed=0) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(B, T, H, generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for i in range(B):
        mask[i, 1 + (i * 3) % T :] = 0  # rows of different lengths (>= 1 real token)
    return enc(x, mask)


def make(kind, name, num_outputs, output_range, pooling="mean", **kw):
    torch.manual_seed(0)
    return build_head(kind, name, hidden=H, num_outputs=num_outputs, pooling=pooling, dropout=0.0,
                      output_range=output_range, hidden_size=8, **kw).eval()


def test_the_paper_heads_are_registered():
    assert PAPER_HEADS <= set(HEADS)


# ----------------------------------------------------------------------------------------------
# shapes and ranges of every head


def cases():
    """(kind, name, num_outputs, output_range): each head with the tasks it serves."""
    out = []
    for kind, name in sorted(HEADS):
        if kind == "single" or kind == "cross":
            out.append((kind, name, 5, None))  # sst
            out.append((kind, name, 1, STS_RANGE))  # a regression on one input
        else:
            if name not in SIMILARITY_HEADS:
                out.append((kind, name, 1, None))  # qqp: one logit
            out.append((kind, name, 1, STS_RANGE))  # sts
    return out


def run_head(head, kind, a: Encoded, b: Encoded) -> torch.Tensor:
    with torch.no_grad():
        return head(a, b) if kind == "bi" else head(a)


@pytest.mark.parametrize("kind,name,num_outputs,output_range", cases())
def test_head_output_shape(kind, name, num_outputs, output_range):
    head = make(kind, name, num_outputs, output_range)
    a, b = random_enc(seed=1), random_enc(seed=2)
    out = run_head(head, kind, a, b)
    assert out.shape == ((6, 5) if num_outputs == 5 else (6,))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # the rows are not all the same (the head looks at its input)
    assert out.std(0).max() > 1e-4


@pytest.mark.parametrize("kind,name,num_outputs,output_range", [c for c in cases() if c[3] is not None])
@pytest.mark.parametrize("scale", [0.0, 1e-30, 1.0, 1e4, 1e30])
def test_regression_heads_stay_in_0_5_even_for_extreme_inputs(kind, name, num_outputs, output_range, scale):
    head = make(kind, name, num_outputs, output_range)
    a, b = random_enc(scale=scale, seed=3), random_enc(scale=scale, seed=4)
    neg = Encoded(-a.last_hidden_state, a.attention_mask, -a.pooler_output)
    for x, y in ((a, b), (a, a), (a, neg)):
        out = run_head(head, kind, x, y)
        assert torch.isfinite(out).all(), (name, scale)
        assert (out >= 0.0).all() and (out <= 5.0).all(), (name, scale, out)


@pytest.mark.parametrize("name", sorted(SIMILARITY_HEADS))
def test_similarity_heads_refuse_classification_tasks(name):
    with pytest.raises(ConfigError, match="needs a regression task"):
        make("bi", name, 1, None)


def test_unknown_head_and_bad_head_layers():
    with pytest.raises(ConfigError, match="does not exist"):
        make("bi", "conv1d", 1, None)  # conv1d is a single-sentence head
    with pytest.raises(ConfigError, match="head_layers"):
        make("bi", "baseline", 1, STS_RANGE, head_layers=2)  # only cosine takes extra layers
    with pytest.raises(ConfigError, match="head_layers"):
        make("bi", "cosine", 1, STS_RANGE, head_layers=-1)
    with pytest.raises(ConfigError, match="pooling must be 'mean' or 'cls'"):
        make("single", "conv1d", 5, None, pooling="pooler")


# ----------------------------------------------------------------------------------------------
# what each head computes


def masked_mean(e: Encoded) -> torch.Tensor:
    """(B, H): the mean of the hidden states over the real tokens."""
    return (e.last_hidden_state * e.attention_mask.unsqueeze(-1)).sum(1) / e.attention_mask.sum(1, keepdim=True)


def one(v: torch.Tensor) -> Encoded:
    """A batch of single-token sequences: mean (and cls) pooling returns ``v`` itself."""
    return enc(v.unsqueeze(1))


def test_cosine_head_maps_cos_linearly_onto_0_5():
    head = make("bi", "cosine", 1, STS_RANGE)
    assert sum(p.numel() for p in head.parameters()) == 0  # no extra layers, no parameters
    u = torch.tensor([[1.0, 2.0, 0.0, -1.0] + [0.0] * (H - 4)])
    ortho = torch.tensor([[2.0, -1.0, 3.0, 0.0] + [0.0] * (H - 4)])  # u . ortho = 0
    cases = {
        "same": (u, 3.0 * u, 5.0), "opposite": (u, -u, 0.0), "orthogonal": (u, ortho, 2.5), "zero": (u, 0 * u, 2.5)
    }
    for what, (x, y, expected) in cases.items():
        out = run_head(head, "bi", one(x), one(y))
        assert out.item() == pytest.approx(expected, abs=1e-5), what
    a, b = random_enc(seed=5), random_enc(seed=6)
    expected = 5.0 * (F.cosine_similarity(masked_mean(a), masked_mean(b), dim=-1) + 1.0) / 2.0
    torch.testing.assert_close(run_head(head, "bi", a, b), expected, rtol=1e-5, atol=1e-5)



def test_sbert_cosine_head_regresses_the_cosine_onto_0_5():
    """SBERT's map: cos 1 -> 5, cos 0 -> 0 (MSE against gold / 5 on the cosine); a negative
    cosine is clipped to the range's low end."""
    head = make("bi", "sbert_cosine", 1, STS_RANGE)
    assert sum(p.numel() for p in head.parameters()) == 0
    u = torch.tensor([[1.0, 2.0, 0.0, -1.0] + [0.0] * (H - 4)])
    ortho = torch.tensor([[2.0, -1.0, 3.0, 0.0] + [0.0] * (H - 4)])
    half = torch.tensor([[1.0, 1.0] + [0.0] * (H - 2)])  # cos(u, half) = 3 / (sqrt(6) sqrt(2))
    cases = {"same": (u, 3.0 * u, 5.0), "opposite": (u, -u, 0.0), "orthogonal": (u, ortho, 0.0),
             "between": (u, half, 5.0 * 3.0 / (6**0.5 * 2**0.5))}
    for what, (x, y, expected) in cases.items():
        assert run_head(head, "bi", one(x), one(y)).item() == pytest.approx(expected, abs=1e-5), what
    a, b = random_enc(seed=5), random_enc(seed=6)
    expected = 5.0 * F.cosine_similarity(masked_mean(a), masked_mean(b), dim=-1).clamp(min=0.0)
    torch.testing.assert_close(run_head(head, "bi", a, b), expected, rtol=1e-5, atol=1e-5)


def test_cosine_is_overflow_safe():
    u = torch.full((1, H), 1e30)
    assert cosine(u, u).item() == pytest.approx(1.0, abs=1e-6)
    assert cosine(u, -u).item() == pytest.approx(-1.0, abs=1e-6)
    assert cosine(u, torch.zeros_like(u)).item() == 0.0


def test_cosine_head_with_extra_layers():
    head = make("bi", "cosine", 1, STS_RANGE, head_layers=2)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 and all(lin.weight.shape == (H, H) for lin in linears)
    assert sum(isinstance(m, nn.Tanh) for m in head.modules()) == 2
    for lin in linears:  # they start as the identity
        assert torch.equal(lin.weight, torch.eye(H)) and torch.equal(lin.bias, torch.zeros(H))
    with torch.no_grad():
        for lin in linears:
            lin.weight.add_(0.3 * torch.randn(H, H))
    u, v = torch.randn(4, H), torch.randn(4, H)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(linears[1](torch.tanh(linears[0](x))))

    expected = 5.0 * (F.cosine_similarity(f(u), f(v), dim=-1) + 1) / 2
    torch.testing.assert_close(run_head(head, "bi", one(u), one(v)), expected, rtol=1e-5, atol=1e-5)
    # the extra layers keep the sign, so the score still spans the range: u vs -u gives 0
    assert run_head(head, "bi", one(u), one(-u)).max().item() == pytest.approx(0.0, abs=1e-5)


def test_compress_expand_head():
    head = make("bi", "compress_expand", 1, STS_RANGE)
    seq = head.bottleneck
    assert [type(m) for m in seq] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert seq[0].weight.shape == (8, H) and seq[3].weight.shape == (H, 8)
    u, v = torch.randn(5, H), torch.randn(5, H)
    expected = 5.0 * torch.sigmoid(F.cosine_similarity(seq(u), seq(v), dim=-1))
    torch.testing.assert_close(run_head(head, "bi", one(u), one(v)), expected, rtol=1e-5, atol=1e-5)
    # identical sentences: 5 sigmoid(1), the top of this head's reach
    assert run_head(head, "bi", one(u), one(u)) == pytest.approx(5 / (1 + math.exp(-1)), abs=1e-5)


def test_gelu_head():
    head = make("bi", "gelu", 1, None)
    seq = head.mlp
    assert [type(m) for m in seq] == [nn.Linear, nn.GELU, nn.Linear]
    assert seq[0].weight.shape == (8, H) and seq[2].weight.shape == (1, 8)
    u, v = torch.randn(5, H), torch.randn(5, H)
    expected = seq[2](F.gelu(seq[0]((u - v).abs()))).squeeze(-1)
    torch.testing.assert_close(run_head(head, "bi", one(u), one(v)), expected)
    # |u - v| is symmetric in the pair
    torch.testing.assert_close(run_head(head, "bi", one(v), one(u)), expected)


def test_mlp_head():
    head = make("bi", "mlp", 1, None)
    seq = head.mlp
    assert [type(m) for m in seq] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert seq[0].weight.shape == (8, 3 * H)
    u, v = torch.randn(5, H), torch.randn(5, H)
    expected = seq(torch.cat([u, v, (u - v).abs()], -1)).squeeze(-1)
    torch.testing.assert_close(run_head(head, "bi", one(u), one(v)), expected)


def test_mean_head_always_mean_pools():
    head = make("single", "mean", 5, None, pooling="cls")  # pooling is ignored: always mean
    e = random_enc(seed=7)
    m = (e.last_hidden_state * e.attention_mask.unsqueeze(-1)).sum(1) / e.attention_mask.sum(1, keepdim=True)
    torch.testing.assert_close(run_head(head, "single", e, None), head.classifier(m))


# ----------------------------------------------------------------------------------------------
# conv1d: padding does not change the output


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_conv_head_ignores_padding(pooling):
    head = make("single", "conv1d", 5, None, pooling=pooling)
    assert isinstance(head, ConvHead) and head.conv.weight.shape == (8, H, 3)
    torch.manual_seed(8)
    L, T = 5, 9
    seq = torch.randn(1, L, H)
    alone = run_head(head, "single", enc(seq), None)[0]
    # the same sentence as row 1 of a batch padded to T, pads holding large junk (as an encoder's
    # states at pad positions are not zero), next to longer and shorter sentences
    x = 50.0 * torch.randn(3, T, H)
    x[1, :L] = seq[0]
    mask = torch.zeros(3, T, dtype=torch.long)
    mask[0, :T] = 1
    mask[1, :L] = 1
    mask[2, :2] = 1
    batch = run_head(head, "single", enc(x, mask), None)
    torch.testing.assert_close(batch[1], alone, rtol=1e-5, atol=1e-5)
    # the test can fail: without masking the input, the junk next to the last token leaks in
    feats = torch.relu(head.conv(x.transpose(1, 2))).transpose(1, 2)[1, :L]
    naive = head.classifier(feats.mean(0) if pooling == "mean" else feats[0])
    if pooling == "mean":
        assert not torch.allclose(naive, alone, atol=1e-3)
    # and a different sentence gives a different output
    x2 = x.clone()
    x2[1, 1] += 1.0  # a token next to [CLS]
    assert not torch.allclose(run_head(head, "single", enc(x2, mask), None)[1], alone, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# surgical fine-tuning: train.freeze_layers


def tiny_model(tiny_encoder, **task_heads):
    overrides = [f"--tasks.{t}.{k}={v}" for t, kv in task_heads.items() for k, v in kv.items()]
    cfg = load_config(None, overrides)
    torch.manual_seed(0)
    return cfg, build_model(cfg, tiny_encoder, pretrained=False)


def fake_batch(task: str, B=4, T=6, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def ids() -> torch.Tensor:
        return torch.randint(1000, 2000, (B, T), generator=g)

    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 4:] = 0
    batch = {"input_ids": ids(), "attention_mask": mask, "token_type_ids": torch.zeros(B, T, dtype=torch.long)}
    if task != "sst":
        batch.update({
            "input_ids_b": ids(), "attention_mask_b": mask.clone(),
            "token_type_ids_b": torch.zeros(B, T, dtype=torch.long),
        })
    batch["labels"] = {
        "sst": torch.tensor([0, 1, 4, 2]), "qqp": torch.tensor([0.0, 1.0, 1.0, 0.0]),
        "sts": torch.tensor([0.5, 4.0, 2.5, 1.0]),
    }[task]
    return batch


def expected_frozen(name: str, k: int) -> bool:
    if k == 0 or not name.startswith("encoder."):
        return False
    if name.startswith("encoder.embeddings."):
        return True
    if name.startswith("encoder.encoder.layer."):
        return int(name.split(".")[3]) < k
    return False  # the pooler


@pytest.mark.parametrize("optim_name", ["adamw", "torch_adamw", "lion"])
@pytest.mark.parametrize("k", [-1, 0, 1, 2])
def test_freeze_layers_keeps_frozen_weights_and_trains_the_rest(tiny_encoder, k, optim_name):
    from minbert.tasks.base import get_task

    cfg, model = tiny_model(tiny_encoder)
    frozen = set(freeze_layers(model, k))
    names = dict(model.named_parameters())
    assert frozen == {n for n in names if expected_frozen(n, k)}
    assert all(names[n].requires_grad == (n not in frozen) for n in names)
    if k == 2:  # both layers of the tiny encoder: only the pooler and heads train
        assert {n.split(".")[1] for n in names if names[n].requires_grad and n.startswith("encoder.")} == {"pooler"}

    before = {n: p.detach().clone() for n, p in names.items()}
    opt_cfg = load_config(None, [f"--optim.name={optim_name}", "--optim.lr=1e-3"]).optim
    optimizer = build_optimizer(opt_cfg, param_groups(model, 0.0, 1e-3), torch.device("cpu"))
    model.train()
    loss = sum(get_task(t).loss(model(t, fake_batch(t)), fake_batch(t)["labels"]) for t in ("sst", "qqp", "sts"))
    loss.backward()
    assert all(names[n].grad is None for n in frozen)
    optimizer.step()
    with_grad = {n for n, p in names.items() if p.grad is not None}
    for n, p in names.items():
        if n in frozen:
            assert torch.equal(p, before[n]), f"frozen {n} changed"
        elif n in with_grad:
            assert not torch.equal(p, before[n]), f"trainable {n} did not change"
    # every layer above the frozen part, and every head, was trained
    for i in range(max(k, 0), 2):
        assert any(n.startswith(f"encoder.encoder.layer.{i}.") for n in with_grad), i
    assert all(n in with_grad for n in names if n.startswith("heads."))


def test_freeze_layers_out_of_range(tiny_encoder):
    _, model = tiny_model(tiny_encoder)
    for k in (-2, 3):  # the tiny encoder has 2 layers
        with pytest.raises(ConfigError, match="train.freeze_layers"):
            freeze_layers(model, k)


# ----------------------------------------------------------------------------------------------
# train.init_from


def fake_run(folder, cfg, model) -> None:
    """A run folder as train() leaves it (config, encoder description, best weights)."""
    (folder / "encoder").mkdir(parents=True)
    (folder / "config.yaml").write_text(dump_yaml(cfg))
    (folder / "encoder" / "config.json").write_text("{}")
    save_weights(folder / "checkpoints" / "best" / "model.safetensors", model.state_dict(), {"epoch": 3})


def test_init_from_loads_the_other_runs_weights(tiny_encoder, tmp_path):
    heads = {"qqp": {"head": "gelu", "pooling": "mean"}, "sts": {"head": "cosine", "pooling": "mean"}}
    cfg, source = tiny_model(tiny_encoder, **heads)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))  # not what a fresh build gives
    fake_run(tmp_path / "a", cfg, source)
    _, target = tiny_model(tiny_encoder, **heads)
    assert not torch.equal(target.heads["qqp"].mlp[0].weight, source.heads["qqp"].mlp[0].weight)
    path = init_from_run(target, tmp_path / "a")
    assert path == tmp_path / "a" / "checkpoints" / "best" / "model.safetensors"
    saved, _ = load_weights(path)
    state = target.state_dict()
    assert set(state) == set(saved)
    for k, v in saved.items():
        assert torch.equal(state[k], v), k

    # other heads: refused, naming the keys
    _, other = tiny_model(tiny_encoder)  # baseline heads
    with pytest.raises(CheckpointError, match="heads.qqp"):
        init_from_run(other, tmp_path / "a")
    with pytest.raises(CheckpointError, match="no such run folder"):
        init_from_run(target, tmp_path / "nowhere")


def test_init_from_through_train(tiny_encoder, data_dir, tmp_path):
    """train() with train.init_from starts from the other run's best weights: with lr 0 the new
    run's best weights are exactly the old run's."""
    from minbert.training.trainer import train

    base = [f"--model.encoder={tiny_encoder}", "--train.device=cpu", "--train.epochs=1", "--output.report_to=none",
            "--output.plot=false", "--output.test_predictions=false", "--optim.lr=1e-3"]
    base += [f"--tasks.{t}.{k}=8" for t in ("sst", "qqp", "sts") for k in ("train_limit", "dev_limit", "batch_size")]
    a = train(load_config(None, base), run_dir=tmp_path / "a", data_dir=data_dir, progress=False)
    b = train(load_config(None, base + [f"--train.init_from={a.run_dir}", "--optim.lr=0.0", "--train.freeze_layers=1"]),
              run_dir=tmp_path / "b", data_dir=data_dir, progress=False)
    wa, _ = load_weights(a.run_dir / "checkpoints" / "best" / "model.safetensors")
    wb, _ = load_weights(b.run_dir / "checkpoints" / "best" / "model.safetensors")
    assert set(wa) == set(wb)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert b.summary["dev"] == pytest.approx(a.summary["dev"])
    # and run a had trained (its weights are not the tiny encoder's own)
    from safetensors.torch import load_file

    orig = load_file(str(tiny_encoder / "model.safetensors"))
    k = "encoder.layer.1.output.dense.weight"
    assert not torch.equal(wa[f"encoder.{k}"], orig[k])


def test_sbert_head_uses_u_v_absdiff_and_product():
    head = make("bi", "sbert", 1, None)
    seq = head.mlp
    assert [type(m) for m in seq] == [nn.Linear, nn.GELU, nn.Linear]
    assert seq[0].weight.shape == (8, 4 * H)
    u, v = torch.randn(5, H), torch.randn(5, H)
    expected = seq(torch.cat([u, v, (u - v).abs(), u * v], -1)).squeeze(-1)
    torch.testing.assert_close(run_head(head, "bi", one(u), one(v)), expected)
