"""Descriptor rows of a candidate list: computed once, in parallel, cached by content.

Featurising a list of 10^4-10^5 materials with Magpie costs minutes; a campaign (and every
restart of it, and the next campaign over the same list) needs those rows again.
:func:`featurize_rows` therefore

1. keys every candidate by a SHA-256 hash of its material's content (the normalised
   formula, or the structure's JSON; :meth:`CandidateRow.content`), the descriptor's name
   and its options;
2. looks the keys up in the cache directory (one ``.npz`` file per descriptor and options:
   ``<descriptor>-<hash of options>.npz`` holding ``keys`` and ``rows``);
3. computes only the missing rows, in a process pool of ``workers`` processes (default:
   one per core), each process building its own descriptor;
4. writes the grown cache back (to a temporary file, then renamed, so a crash never leaves
   half a file) and reports a row whose features cannot be computed as a bad row, by row and
   reason, instead of failing the list.

A changed list thus computes only its new rows; the same list computes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from planners.candidate_list import BadRow, CandidateRow
from surrogates.descriptors import make_descriptor

logger = logging.getLogger(__name__)

__all__ = ["FeatureResult", "cache_file", "featurize_rows", "row_key"]

CHUNK = 256
"""Materials per task sent to a worker process."""


@dataclass
class FeatureResult:
    """Features of a list's rows.

    Attributes:
        x: ``m x d`` feature rows of the usable candidates.
        index: For each row of ``x``, its position in the list given.
        bad: Rows whose features could not be computed.
        computed: How many rows were computed now (not found in the cache).
        labels: The descriptor's ``d`` feature labels.
    """

    x: NDArray[np.float64]
    index: list[int]
    bad: list[BadRow]
    computed: int
    labels: list[str]


def _options_text(descriptor: str, options: Mapping[str, Any]) -> str:
    return json.dumps({"descriptor": descriptor, "options": dict(options)}, sort_keys=True)


def row_key(row: CandidateRow, descriptor: str, options: Mapping[str, Any]) -> str:
    """The cache key of a row: hash of material content, descriptor name and options."""
    text = row.content() + "\n" + _options_text(descriptor, options)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_file(cache_dir: str | Path, descriptor: str, options: Mapping[str, Any]) -> Path:
    """The ``.npz`` file that holds one descriptor's (with these options) cached rows."""
    tag = hashlib.sha256(_options_text(descriptor, options).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{descriptor}-{tag}.npz"


def _load(path: Path) -> dict[str, NDArray[np.float64]]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, rows = data["keys"], data["rows"]
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("feature cache %s unreadable (%s); recomputing", path, exc)
        return {}
    return {str(k): rows[i] for i, k in enumerate(keys)}


def _save(path: Path, table: Mapping[str, NDArray[np.float64]], dim: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = np.array(list(table), dtype="U64")
    rows = np.stack(list(table.values())) if table else np.zeros((0, dim))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, keys=keys, rows=rows)
    tmp.replace(path)


def _compute(
    descriptor: str, options: Mapping[str, Any], materials: Sequence[Any]
) -> list[NDArray[np.float64] | str]:
    """Feature rows of materials (a worker's task); an error message where one fails."""
    desc = make_descriptor(descriptor, **options)
    out: list[NDArray[np.float64] | str] = []
    for m in materials:
        if desc.needs_structure and not hasattr(m, "lattice"):
            out.append(f"descriptor {descriptor!r} needs a structure; the list gives a formula")
            continue
        try:
            row = np.asarray(desc.featurize_one(m), dtype=np.float64)
        except Exception as exc:  # a descriptor may raise anything on an odd material
            out.append(f"descriptor {descriptor!r}: {type(exc).__name__}: {exc}")
            continue
        if row.shape != (desc.dim,) or not np.all(np.isfinite(row)):
            out.append(f"descriptor {descriptor!r}: features not finite")
        else:
            out.append(row)
    return out


def featurize_rows(
    rows: Sequence[CandidateRow],
    descriptor: str,
    options: Mapping[str, Any] | None = None,
    *,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
) -> FeatureResult:
    """Features of every row, from the cache where present (see the module docstring).

    Args:
        rows: The candidates.
        descriptor: A registered descriptor name.
        options: Its options.
        cache_dir: Where the cache lives (``None``: no cache, everything is computed).
        workers: Worker processes (``None``: one per core; 1: computed in this process).

    Returns:
        The rows' features, the rows that failed, and how many were computed.

    Raises:
        RegistryError: If the descriptor is unknown.
        InvalidCampaignError: If its options are invalid.
    """
    opts = dict(options or {})
    desc = make_descriptor(descriptor, **opts)  # bad names and options fail here, at once
    dim = desc.dim
    keys = [row_key(r, descriptor, opts) for r in rows]
    path = cache_file(cache_dir, descriptor, opts) if cache_dir is not None else None
    table = _load(path) if path is not None else {}
    missing = sorted({k: i for i, k in enumerate(keys) if k not in table}.values())
    failed: dict[str, str] = {}
    if missing:
        materials = [rows[i].material for i in missing]
        chunks = [materials[s : s + CHUNK] for s in range(0, len(materials), CHUNK)]
        n_proc = min(workers or os.cpu_count() or 1, len(chunks))
        if n_proc <= 1:
            results = [_compute(descriptor, opts, c) for c in chunks]
        else:
            with ProcessPoolExecutor(max_workers=n_proc) as pool:
                n_chunks = len(chunks)
                results = list(
                    pool.map(_compute, [descriptor] * n_chunks, [opts] * n_chunks, chunks)
                )
        flat = [v for chunk in results for v in chunk]
        for i, value in zip(missing, flat, strict=True):
            if isinstance(value, str):
                failed[keys[i]] = value
            else:
                table[keys[i]] = value
        if path is not None:
            _save(path, table, dim)
        logger.info(
            "featurised %d of %d candidates with %s (%d failed)",
            len(missing),
            len(rows),
            descriptor,
            len(failed),
        )
    index = [i for i, k in enumerate(keys) if k in table]
    x = np.stack([table[keys[i]] for i in index]) if index else np.zeros((0, dim))
    bad = [BadRow(rows[i].source, failed[k]) for i, k in enumerate(keys) if k in failed]
    return FeatureResult(x, index, bad, len(missing), desc.feature_labels())
