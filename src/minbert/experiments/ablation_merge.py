"""Merging an earlier ablation report (rows run on other machines) into a new one: which of its
records still hold for the ablation file as it is now, mended to the report's own types.

A record is kept only when its config cannot have changed: the earlier report names the same base
preset (and, when it records one, the same digest of its contents), the same ``common``
overrides, and every row of the record's chain (the row and its ancestors) with the same parent
and overrides. The final row's seeds are kept on the same terms, when the final row is the same
(or ``auto``). Anything of the wrong type (a report that is not JSON, a ``dev`` that is not a
mapping of numbers, seeds that do not pair with their scores) keeps nothing; the names, changes
and sources always come from the ablation file, the numbers from the earlier record.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .rows import METRICS

if TYPE_CHECKING:
    from .ablation import Ablation

RESULTS = ("best_epoch", "steps", "epochs", "wall_s", "steps_per_epoch")  # a row record's numbers besides dev


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def dev_scores(value: Any) -> dict | None:
    """The metrics of ``METRICS`` that ``value`` holds, when it is a mapping whose metrics are numbers
    or null and at least one is a number; else None (not a dev record)."""
    if not isinstance(value, dict):
        return None
    dev = {k: value[k] for k in METRICS if k in value}
    if not all(v is None or is_number(v) for v in dev.values()) or not any(map(is_number, dev.values())):
        return None
    return dev


def base_digest(path: Path) -> str:
    """SHA-256 of a base preset's YAML as data (comments and layout aside)."""
    return hashlib.sha256(json.dumps(yaml.safe_load(path.read_text()), sort_keys=True).encode()).hexdigest()


def previous_report(path: Path) -> dict:
    """The report already at ``path`` ({} when there is none or it is not a JSON object)."""
    try:
        prev = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return prev if isinstance(prev, dict) else {}


def _records(prev: dict) -> dict[str, dict]:
    """The earlier report's row records by name (the first of a name; records that are not
    mappings with a string name left out)."""
    rows = prev.get("rows")
    out: dict[str, dict] = {}
    for rec in rows if isinstance(rows, list) else []:
        if isinstance(rec, dict) and isinstance(rec.get("name"), str):
            out.setdefault(rec["name"], rec)
    return out


def same_config(prev: dict, ab: Ablation, name: str, digest: str) -> bool:
    """Whether the earlier report ran row ``name`` with the config the ablation gives it now
    (base preset, its ``digest`` when the report has one, ``common``, each row of the chain)."""
    if prev.get("base") != ab.base.name or prev.get("common") != list(ab.common):
        return False
    if prev.get("base_sha256", digest) != digest:
        return False
    recs = _records(prev)
    chain = [(recs.get(r.name) or {}, r) for r in ab.chain(name)]
    return all(rec and rec.get("parent") == r.parent and rec.get("overrides") == list(r.overrides) for rec, r in chain)


def kept_row(prev: dict, ab: Ablation, name: str, digest: str) -> dict | None:
    """The numbers of row ``name``'s earlier record (``seeds``, ``dev`` and :data:`RESULTS`, a
    value of the wrong type as None) when it is finished and its config is the same; else None."""
    rec = _records(prev).get(name)
    dev = dev_scores(rec.get("dev")) if rec else None
    if dev is None or not same_config(prev, ab, name, digest):
        return None
    return {"seeds": 1, "dev": dev, **{k: rec.get(k) if is_number(rec.get(k)) else None for k in RESULTS}}


def kept_final(prev: dict, ab: Ablation, digest: str) -> tuple[str, list[tuple[int, dict]]] | None:
    """The earlier report's final row and its ``(seed, {"dev": scores})`` per seed, when the final
    row is the same (or ``auto``), its config is the same and every seed pairs with a dev record."""
    f = prev.get("final")
    if not isinstance(f, dict) or not isinstance(f.get("row"), str):
        return None
    name, seeds, per_seed = f["row"], f.get("seeds"), f.get("per_seed")
    if name not in ab.rows or ab.final_row not in ("auto", name) or not same_config(prev, ab, name, digest):
        return None
    if not (isinstance(seeds, list) and isinstance(per_seed, list) and seeds and len(seeds) == len(per_seed)):
        return None
    devs = [dev_scores(d) for d in per_seed]
    if any(d is None for d in devs) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        return None
    return name, [(s, {"dev": d}) for s, d in zip(seeds, devs, strict=True)]
