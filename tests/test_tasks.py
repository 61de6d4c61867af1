"""Per-task tests over the registry: heads, losses, metrics, collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from minbert.config import TaskConfig
from minbert.data.batching import RawSplit, TokenizedSplit, tokenize_split
from minbert.data.tokenizer import Tokenizer, pad_batch
from minbert.errors import ConfigError
from minbert.model.bert import BertModel
from minbert.model.heads import Encoded
from minbert.model.multitask import MultitaskModel
from minbert.tasks.base import TASKS, get_task, register_task

NAMES = sorted(TASKS)
PAIR_NAMES = sorted(n for n, t in TASKS.items() if t.pair)

SENTENCES = [
    "A gripping , beautifully shot film .",
    "Dull .",
    "How do I learn to cook rice without burning it every single time I try?",
    "Two dogs play on the grass.",
    "The plot makes no sense whatsoever , but the actors seem to enjoy themselves .",
    "Is it going to rain tomorrow in Paris?",
    "A man is slicing an onion.",
]
SECONDS = [
    "What a film .",
    "A woman is slicing a tomato with a very sharp knife in the kitchen.",
    "How can I cook rice?",
    "Dogs are playing outside.",
    "Nothing .",
    "Will Paris see rain tomorrow?",
    "Someone cuts an onion.",
]


def pair_input_cases():
    """(task name, pair_input): both encoders for pair tasks, one case for single tasks."""
    out = []
    for name in NAMES:
        kinds = ["bi", "cross"] if TASKS[name].pair else ["bi"]
        out += [(name, k) for k in kinds]
    return out


def random_labels(task, n: int, rng) -> np.ndarray:
    if task.kind == "regression":
        low, high = task.output_range
        return rng.uniform(low, high, size=n).astype(np.float32)
    classes = task.num_outputs if task.kind == "classification" else 2
    return rng.integers(0, classes, size=n).astype(np.int64)


def make_raw(task, n: int = len(SENTENCES), labelled: bool = True, seed: int = 0) -> RawSplit:
    rng = np.random.default_rng(seed)
    texts = [(a, b) if task.pair else (a,) for a, b in zip(SENTENCES[:n], SECONDS[:n], strict=True)]
    labels = random_labels(task, n, rng) if labelled else None
    return RawSplit(f"<{task.name}>", [f"{task.name}{i}" for i in range(n)], texts, labels)


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder):
    return Tokenizer(tiny_encoder, max_length=24, max_positions=128)


@pytest.fixture(scope="module")
def encoder(tiny_encoder):
    return BertModel.from_pretrained(tiny_encoder).eval()


# ----------------------------------------------------------------------------------------------
# registry


def test_builtin_tasks_registered():
    assert {"sst", "qqp", "sts"} <= set(TASKS)
    for name, task in TASKS.items():
        assert task.name == name
        assert get_task(name) is task


def test_unknown_task_is_config_error():
    with pytest.raises(ConfigError, match="'nope'"):
        get_task("nope")


@pytest.mark.parametrize("name", NAMES)
def test_register_duplicate_name_raises(name):
    before = dict(TASKS)
    cls = type(TASKS[name])
    with pytest.raises(ValueError, match=repr(name)):
        register_task(cls)  # as a class decorator
    with pytest.raises(ValueError, match=repr(name)):
        register_task(cls())  # as a plain call on an instance
    assert TASKS == before and TASKS[name] is before[name]


def test_register_new_task_then_remove():
    sst = type(TASKS["sst"])

    class Other(sst):
        name = "test-only-task"

    try:
        assert register_task(Other) is Other
        assert isinstance(get_task("test-only-task"), Other)
        with pytest.raises(ValueError):
            register_task(Other)
    finally:
        TASKS.pop("test-only-task", None)


# ----------------------------------------------------------------------------------------------
# heads through the multitask model


def expected_shape(task, batch: int) -> tuple[int, ...]:
    return (batch, task.num_outputs) if task.num_outputs > 1 else (batch,)


@pytest.mark.parametrize("name,pair_input", pair_input_cases())
def test_head_output_shape_through_model(name, pair_input, tokenizer, encoder):
    task = get_task(name)
    cfg = TaskConfig(pair_input=pair_input)
    kind = task.input_kind(pair_input)
    assert kind == (pair_input if task.pair else "single")
    split = tokenize_split(make_raw(task), tokenizer, kind)
    index = np.array([4, 0, 2, 5])
    batch = task.collate(split, index, pad_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    head = task.build_head(cfg, hidden=encoder.config.hidden_size)
    model = MultitaskModel(encoder, {name: head}, {name: kind}).eval()
    with torch.no_grad():
        out = model(name, batch)
    assert out.shape == expected_shape(task, len(index))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    if task.output_range is not None:
        low, high = task.output_range
        assert (out >= low).all() and (out <= high).all()
    # the loss and predictions accept the output and the batch's labels
    loss = task.loss(out, batch["labels"])
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert task.predict(out).shape == (len(index),)


@pytest.mark.parametrize("name,pair_input", pair_input_cases())
def test_head_alone_hidden_16(name, pair_input):
    task = get_task(name)
    head = task.build_head(TaskConfig(pair_input=pair_input, pooling="mean"), hidden=16).eval()
    B, T, H = 5, 7, 16
    torch.manual_seed(1)

    def enc(scale=1.0):
        mask = torch.ones(B, T, dtype=torch.long)
        mask[:, 4:] = 0
        return Encoded(scale * torch.randn(B, T, H), mask, torch.randn(B, H))

    with torch.no_grad():
        out = head(enc(), enc()) if task.input_kind(pair_input) == "bi" else head(enc())
    assert out.shape == expected_shape(task, B)


@pytest.mark.parametrize("name", [n for n in NAMES if TASKS[n].output_range is not None])
@pytest.mark.parametrize("pair_input", ["bi", "cross"])
def test_regression_outputs_stay_in_range(name, pair_input):
    """Even with huge activations the score is squashed into the task's range, and reaches
    near both ends."""
    task = get_task(name)
    low, high = task.output_range
    head = task.build_head(TaskConfig(pair_input=pair_input, dropout=0.0), hidden=16).eval()
    B, T, H = 64, 3, 16
    torch.manual_seed(2)
    x = 1e4 * torch.randn(B, T, H)
    e = Encoded(x, torch.ones(B, T, dtype=torch.long), x[:, 0])
    zero = Encoded(torch.zeros_like(x), e.attention_mask, torch.zeros(B, H))
    with torch.no_grad():
        out = head(e, zero) if task.input_kind(pair_input) == "bi" else head(e)
    assert out.shape == (B,)
    assert (out >= low).all() and (out <= high).all()
    assert out.min() < low + 0.05 * (high - low) or out.max() > high - 0.05 * (high - low)


# ----------------------------------------------------------------------------------------------
# losses against hand computations


def hand_loss(task, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if task.kind == "classification":
        # cross-entropy: mean of -log softmax(out)[label]
        picked = out[torch.arange(out.shape[0]), labels]
        log_z = torch.log(torch.exp(out).sum(dim=1))
        return (log_z - picked).mean()
    if task.kind == "binary":
        # BCE with logits: -(y log s(x) + (1 - y) log(1 - s(x)))
        y = labels.to(out.dtype)
        s = 1.0 / (1.0 + torch.exp(-out))
        return -(y * torch.log(s) + (1 - y) * torch.log(1 - s)).mean()
    if task.kind == "regression":
        return ((out - labels.to(out.dtype)) ** 2).mean()
    raise AssertionError(f"unknown kind {task.kind}")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_matches_hand_computation(name, seed):
    task = get_task(name)
    g = torch.Generator().manual_seed(seed)
    B = 9
    rng = np.random.default_rng(seed)
    labels = torch.from_numpy(random_labels(task, B, rng))
    if task.kind == "regression":
        low, high = task.output_range
        out = low + (high - low) * torch.rand(B, generator=g, dtype=torch.float64)
    else:
        out = 3 * torch.randn(*expected_shape(task, B), generator=g, dtype=torch.float64)
    out.requires_grad_(True)
    loss = task.loss(out, labels)
    ref = hand_loss(task, out.detach().float(), labels)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    assert loss.item() > 0
    loss.backward()
    assert out.grad is not None and torch.isfinite(out.grad).all()


def test_loss_zero_for_perfect_regression():
    task = get_task("sts")
    y = torch.tensor([0.0, 2.5, 5.0])
    assert task.loss(y.clone(), y).item() == 0.0


# ----------------------------------------------------------------------------------------------
# predictions and metrics against numpy / scipy


@pytest.mark.parametrize("name", NAMES)
def test_predict(name):
    task = get_task(name)
    torch.manual_seed(3)
    out = torch.randn(*expected_shape(task, 11))
    pred = task.predict(out)
    assert pred.shape == (11,)
    if task.kind == "classification":
        assert np.array_equal(pred, np.argmax(out.numpy(), axis=1))
    elif task.kind == "binary":
        assert np.array_equal(pred, (out.numpy() > 0).astype(np.int64))
    else:
        assert np.allclose(pred, out.numpy())


def hand_f1(pred, gold) -> float:
    tp = sum(1 for p, g in zip(pred, gold, strict=True) if p == 1 and g == 1)
    fp = sum(1 for p, g in zip(pred, gold, strict=True) if p == 1 and g == 0)
    fn = sum(1 for p, g in zip(pred, gold, strict=True) if p == 0 and g == 1)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_against_reference(name, seed):
    task = get_task(name)
    rng = np.random.default_rng(seed)
    n = 101
    gold = random_labels(task, n, rng)
    if task.kind == "regression":
        pred = (gold + rng.normal(0, 1.5, size=n)).astype(np.float32)  # correlated, not perfectly
    else:
        pred = gold.copy()
        flip = rng.random(n) < 0.4
        pred[flip] = random_labels(task, int(flip.sum()), rng)
    m = task.metrics(pred, gold)

    if task.kind in ("classification", "binary"):
        assert m["acc"] == pytest.approx(np.mean(pred == gold))
        assert task.primary(m) == m["acc"]
    if task.kind == "classification":
        C = task.num_outputs
        counts = [[0] * C for _ in range(C)]
        for p, g in zip(pred, gold, strict=True):
            counts[g][p] += 1
        assert m["confusion"] == counts
        assert sum(map(sum, m["confusion"])) == n
        assert sum(m["confusion"][i][i] for i in range(C)) == int(np.sum(pred == gold))
    if task.kind == "binary":
        assert m["f1"] == pytest.approx(hand_f1(pred.tolist(), gold.tolist()))
    if task.kind == "regression":
        p64, g64 = pred.astype(np.float64), gold.astype(np.float64)
        assert m["pearson"] == pytest.approx(stats.pearsonr(p64, g64)[0], abs=1e-9)
        assert m["spearman"] == pytest.approx(stats.spearmanr(p64, g64)[0], abs=1e-9)
        assert 0 < m["pearson"] < 1
        assert task.primary(m) == pytest.approx((m["pearson"] + 1) / 2)


def test_binary_f1_no_positives():
    task = get_task("qqp")
    m = task.metrics(np.zeros(6, dtype=np.int64), np.zeros(6, dtype=np.int64))
    assert m["acc"] == 1.0 and m["f1"] == 0.0


def test_confusion_matrix_orientation():
    # m[gold][pred]: a gold 4 predicted as 0 lands in row 4, column 0
    m = get_task("sst").metrics(np.array([0, 0, 1]), np.array([4, 0, 1]))
    assert m["confusion"][4][0] == 1 and m["confusion"][0][4] == 0
    assert m["confusion"][0][0] == 1 and m["confusion"][1][1] == 1
    assert m["acc"] == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------------------------
# collate


@pytest.mark.parametrize("name", PAIR_NAMES)
def test_bi_encoder_collate_pads_a_and_b_to_same_length(name, tokenizer):
    task = get_task(name)
    split = tokenize_split(make_raw(task), tokenizer, "bi")
    assert split.input_ids_b is not None
    index = np.array([1, 2, 4])  # very different lengths of a and b
    batch = task.collate(split, index, pad_id=tokenizer.pad_token_id)
    T = batch["input_ids"].shape[1]
    for key in ("input_ids", "attention_mask", "token_type_ids", "input_ids_b", "attention_mask_b", "token_type_ids_b"):
        assert batch[key].shape == (len(index), T), key
        assert batch[key].dtype == torch.int64, key
    longest = max(max(len(split.input_ids[i]), len(split.input_ids_b[i])) for i in index)
    assert T == longest
    for row, i in enumerate(index):
        for ids_key, mask_key, seqs in (
            ("input_ids", "attention_mask", split.input_ids),
            ("input_ids_b", "attention_mask_b", split.input_ids_b),
        ):
            n = len(seqs[i])
            assert batch[ids_key][row, :n].tolist() == seqs[i]
            assert batch[mask_key][row].tolist() == [1] * n + [0] * (T - n)
            assert (batch[ids_key][row, n:] == tokenizer.pad_token_id).all()
    assert (batch["token_type_ids"] == 0).all() and (batch["token_type_ids_b"] == 0).all()
    assert batch["ids"] == [split.ids[i] for i in index]


def _reference_collate(split, index, pad_id, multiple):
    """What collate returned when it padded the rows' lists with pad_batch (token by token)."""
    a = [split.input_ids[i] for i in index]
    if split.input_ids_b is None:
        return pad_batch(a, [split.token_type_ids[i] for i in index], pad_id, multiple)
    both, n = pad_batch(a + [split.input_ids_b[i] for i in index], None, pad_id, multiple), len(index)
    halves = (("", slice(0, n)), ("_b", slice(n, None)))
    return {k + suffix: v[rows] for k, v in both.items() for suffix, rows in halves}


rows_strategy = st.lists(st.lists(st.integers(1, 30000), min_size=1, max_size=40), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(a=rows_strategy, b_lengths=st.lists(st.integers(1, 40), min_size=12, max_size=12), pairs=st.booleans(),
       pick=st.lists(st.integers(0, 11), min_size=1, max_size=16), pad_id=st.sampled_from([0, 1, 103]),
       multiple=st.sampled_from([1, 8, 16, 64]))
def test_collate_equals_padding_each_rows_list(a, b_lengths, pairs, pick, pad_id, multiple):
    """collate pads by indexing each split's token matrix; the batch equals the one padded from
    the rows' lists (pad_batch), for single sentences (with token types) and bi-encoder pairs,
    any pad id and multiple, rows picked in any order and more than once."""
    n = len(a)
    types = [[i % 2 for i in range(len(r))] for r in a]
    b = [list(range(5, 5 + b_lengths[i])) for i in range(n)] if pairs else None
    labels = np.arange(n, dtype=np.int64)
    split = TokenizedSplit([f"r{i}" for i in range(n)], a, types, b, labels, np.array([len(r) for r in a]))
    index = np.array([i % n for i in pick])
    batch = get_task("qqp" if pairs else "sst").collate(split, index, pad_id, multiple)
    want = _reference_collate(split, index, pad_id, multiple)
    assert set(want) | {"ids", "labels"} == set(batch)
    for key, value in want.items():
        assert batch[key].dtype == value.dtype == torch.int64 and torch.equal(batch[key], value), key
    assert batch["ids"] == [f"r{i}" for i in index] and batch["labels"].tolist() == index.tolist()


def test_collate_refuses_indices_that_are_not_integers():
    """A boolean mask or float positions would pick other rows than meant: refused."""
    split = TokenizedSplit(["a", "b", "c"], [[1, 2], [3], [4, 5, 6]], [[0, 0], [0], [0, 0, 0]], None,
                           np.arange(3), np.array([2, 1, 3]))
    task = get_task("sst")
    for bad in (np.array([True, False, True]), [0.9, 2.7]):
        with pytest.raises(TypeError, match="integers"):
            task.collate(split, bad)
    assert task.collate(split, [2, 0])["input_ids"].tolist() == [[4, 5, 6], [1, 2, 0]]


@pytest.mark.parametrize("name,pair_input", pair_input_cases())
def test_collate_labels_dtype(name, pair_input, tokenizer):
    task = get_task(name)
    kind = task.input_kind(pair_input)
    raw = make_raw(task)
    split = tokenize_split(raw, tokenizer, kind)
    index = np.array([3, 1])
    batch = task.collate(split, index)
    expect = torch.float32 if task.kind == "regression" else torch.int64
    assert batch["labels"].dtype == expect
    assert batch["labels"].shape == (2,)
    assert np.allclose(batch["labels"].numpy(), raw.labels[index])
    # unlabelled (test) splits give no labels
    split_t = tokenize_split(make_raw(task, labelled=False), tokenizer, kind)
    assert "labels" not in task.collate(split_t, index)


def test_task_label_dtypes_from_reader():
    assert get_task("sst").label_dtype() == np.int64
    assert get_task("qqp").label_dtype() == np.int64
    assert get_task("sts").label_dtype() == np.float32


@pytest.mark.parametrize("name", PAIR_NAMES)
def test_cross_encoder_collate_token_types(name, tokenizer):
    task = get_task(name)
    assert task.input_kind(TaskConfig(pair_input="cross").pair_input) == "cross"
    raw = make_raw(task)
    split = tokenize_split(raw, tokenizer, "cross")
    assert split.input_ids_b is None
    index = np.arange(len(raw))
    batch = task.collate(split, index, pad_id=tokenizer.pad_token_id)
    assert "input_ids_b" not in batch
    cls_id, sep_id = tokenizer._tok.token_to_id("[CLS]"), tokenizer._tok.token_to_id("[SEP]")
    T = batch["input_ids"].shape[1]
    for row in range(len(index)):
        ids = batch["input_ids"][row].tolist()
        types = batch["token_type_ids"][row].tolist()
        n = int(batch["attention_mask"][row].sum())
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (T - n)
        seps = [j for j in range(n) if ids[j] == sep_id]
        assert ids[0] == cls_id and len(seps) == 2 and seps[1] == n - 1
        first_sep = seps[0]
        assert 1 < first_sep < n - 2  # both sentences have at least one token
        # [CLS] a [SEP] -> 0; b [SEP] -> 1; padding -> 0
        assert types[: first_sep + 1] == [0] * (first_sep + 1)
        assert types[first_sep + 1 : n] == [1] * (n - first_sep - 1)
        assert types[n:] == [0] * (T - n)
        # the two segments are the separately tokenised sentences (truncation aside)
        a_ids, _, _ = tokenizer.encode([raw.texts[row][0]])
        b_ids, _, _ = tokenizer.encode([raw.texts[row][1]])
        if len(a_ids[0]) + len(b_ids[0]) - 1 <= tokenizer.max_length:
            assert ids[:first_sep + 1] == a_ids[0]
            assert ids[first_sep + 1 : n] == b_ids[0][1:]


def test_single_task_ignores_pair_input():
    sst = get_task("sst")
    assert sst.input_kind("bi") == sst.input_kind("cross") == "single"
    with pytest.raises(ConfigError, match="pair_input"):
        get_task("sts").input_kind("both")
