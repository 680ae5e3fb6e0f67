"""Fold predictions in, a Kaggle submission out: read, write, check and score (sent by
:func:`tpuperf.kaggle.submit.submit`).

Fold predictions are read with :func:`tpuperf.runs.read_fold_predictions` (their format: :mod:`tpuperf.runs`).

Submission CSV (the competition's sample_submission.csv format): header ``ID,TopConfigs``; IDs ``tile:xla:<graph>`` and
``layout:{xla,nlp}:{random,default}:<graph>``; ``;``-separated config ids, predicted-fastest first.
What a row must list is decided in one place, :meth:`tpuperf.collection.Kind.row_length`, from its file's config count
and used by the writer, the checker and the scorer: distinct ids in 0..n-1, ``min(5, n)`` of them
for a tile kernel (the competition asks for the 5 predicted fastest; a kernel with fewer than 5
configs has no 5 distinct ids, so its row lists all of them) and all ``n`` for a layout file.

The 1,001-config quirk: a few layout test files hold 1,001 configs although the sample row lists
1,000 indices. We rank every config the file holds, so such a row has 1,001 entries (a full
permutation of 0..1000): dropping one would leave the scorer without a rank for it. Given the
data (``data_dir``), the checker therefore requires a layout row of exactly the file's config
count and flags a 1,000-entry row for a 1,001-config file.

Without the data the checker cannot know a file's config count: it can only require a layout row
to be a permutation of 0..len-1 and a tile row to hold 5 ids. That partial check is never enough
to write or send a file: :func:`write_submission` and :func:`tpuperf.kaggle.submit.submit` always check against the
data.

A data file the download stage listed as invalid in the dataset's manifest has no row when
``preprocess.on_bad_file: skip`` left it out; the full check then names that file and its problem
beside its missing ID (:func:`tpuperf.collection.invalid_files`), since Kaggle refuses a submission without it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from tpuperf.atomic import write_atomic
from tpuperf.collection import COLLECTIONS, DATASET_MANIFEST, Collection, get_collection, invalid_files
from tpuperf.data.npz import iter_chunks, read_header
from tpuperf.errors import TpuperfError
from tpuperf.metrics import collection_score, competition_score, rank_configs, unranked_graphs

log = logging.getLogger(__name__)

HEADER = "ID,TopConfigs"
MAX_LISTED = 20  # missing/extra IDs listed one per line before summarising the rest


class SubmissionError(TpuperfError, ValueError):
    """A submission that must not be written, scored or sent; ``problems`` lists why."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path, self.problems = Path(path), problems
        super().__init__(f"{path}: {len(problems)} problem(s):\n" + "\n".join(problems))


def identical_labels(
    first: Mapping[tuple[str, str], np.ndarray] | None, name: str, graph_id: str, config_ids: np.ndarray
) -> np.ndarray | None:
    """The ``same`` labels :func:`tpuperf.metrics.rank_configs` takes for one graph's ``config_ids`` rows:
    ``first[(collection name, graph_id)]`` (int (c,), indexed by config id: a tile cache's ``config_first``, or
    the labels ``tpuperf rank --top K`` computes for a layout file) at those ids. None when ``first`` is None,
    or holds no labels for a layout graph (its submission row ranks every config: Kendall tau of the whole order).
    Raises ValueError when ``first`` lacks a tile graph or does not cover the config ids.
    """
    if first is None:
        return None
    same = first.get((name, graph_id))
    if same is None:
        if get_collection(name).kind.top_k is None:
            return None
        raise ValueError(f"{name}:{graph_id}: no config_first for it (preprocess again?)")
    if len(config_ids) and int(config_ids.max()) >= len(same):
        raise ValueError(f"{name}:{graph_id}: config id {int(config_ids.max())} beyond its {len(same)} config_first")
    return same[config_ids]


def rankings_from_predictions(
    df: pl.DataFrame, first: Mapping[tuple[str, str], np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Submission ID -> config ids predicted-fastest first, from rows of one prediction per config.

    ``df`` needs ``collection``, ``graph_id``, ``config_id`` and ``pred`` (e.g. one fold's test
    rows, or an ensemble's combined scores). Ties in ``pred`` go to the lower config id. ``first``:
    ``{(collection name, graph_id): config_first}`` of every tile graph (:meth:`tpuperf.data.cache.CollectionCache.config_first`),
    so that a tile row's top 5 are distinct configurations where the graph has 5
    (:func:`identical_labels`, :func:`tpuperf.metrics.rank_configs`).
    """
    dups = df.height - df.select("collection", "graph_id", "config_id").n_unique()
    if dups:
        raise ValueError(f"{dups} configs have more than one prediction; combine folds/models first")
    rankings = {}
    for (name, graph_id), group in df.sort("config_id").group_by(["collection", "graph_id"], maintain_order=True):
        config_ids = group["config_id"].to_numpy()
        same = identical_labels(first, name, graph_id, config_ids)
        try:
            order = rank_configs(group["pred"].to_numpy(), same)
        except ValueError as exc:
            raise ValueError(f"{name}:{graph_id}: {exc}") from exc
        rankings[get_collection(name).submission_id(graph_id)] = config_ids[order]
    return rankings


# ---------------------------------------------------------------- submission files


def parse_id(row_id: str) -> tuple[Collection, str]:
    """Split ``layout:nlp:random:<graph>`` into its collection and graph id."""
    for col in sorted(COLLECTIONS, key=lambda c: -len(c.name)):
        prefix = f"{col.name}:"
        if row_id.startswith(prefix) and len(row_id) > len(prefix):
            return col, row_id[len(prefix) :]
    raise ValueError(f"ID {row_id!r} does not start with a collection name ({', '.join(c.name for c in COLLECTIONS)})")


def _read_rows(path: Path, problems: list[str]) -> list[tuple[int, str, str]] | None:
    """(line number, ID, TopConfigs) of each data row, or None when unreadable or the header is
    wrong; problems are appended.

    Read line by line rather than with ``csv``: fields never need quoting, and a valid-split
    layout row can exceed the csv module's field size limit.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"cannot read {path}: {exc}")
        return None
    if not lines or lines[0].strip() != HEADER:
        problems.append(f"line 1: header is {lines[0][:60] if lines else '(empty file)'!r}, expected {HEADER!r}")
        return None
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != 2:
            problems.append(f"line {number}: {len(fields)} comma-separated fields, expected 2")
            continue
        rows.append((number, fields[0].strip(), fields[1].strip()))
    return rows


def _parse_ids(text: str) -> tuple[np.ndarray | None, str | None]:
    tokens = text.split(";") if text else []
    if not tokens:
        return None, "no config ids"
    bad = [t for t in tokens if not t.strip().lstrip("-").isdigit()]
    if bad:
        return None, f"{len(bad)} entries are not integers, e.g. {bad[:3]}"
    return np.array([int(t) for t in tokens], dtype=np.int64), None


def _describe(values: Iterable[int], limit: int = 5) -> str:
    values = sorted(values)
    shown = ", ".join(map(str, values[:limit]))
    return f"{shown}, ... ({len(values)} in all)" if len(values) > limit else shown


def _num_configs(path: Path) -> int:
    """Config count of one .npz, from its header."""
    return read_header(path)["config_runtime"].shape[0]


def _row_problems(collection: Collection, ids: np.ndarray, num_configs: int | None) -> list[str]:
    """Problems of one row's config ids; ``num_configs`` is the file's count when known."""
    problems = []
    dups = [v for v, n in Counter(ids.tolist()).items() if n > 1]
    if dups:
        problems.append(f"repeated config ids {_describe(dups)}")
    top_k = collection.kind.top_k
    if top_k is not None:
        if num_configs is None:
            if len(ids) != top_k:
                problems.append(
                    f"tile row has {len(ids)} config ids, expected {top_k} (fewer only for a kernel "
                    "with fewer configs: check against the data, --data)"
                )
        elif len(ids) != collection.kind.row_length(num_configs):
            problems.append(
                f"tile row has {len(ids)} config ids but the kernel has {num_configs} configs: "
                f"expected {collection.kind.row_length(num_configs)}, the predicted fastest first"
            )
        limit = num_configs
    else:
        limit = len(ids) if num_configs is None else num_configs
        missing = set(range(limit)) - set(ids.tolist())
        unranked = f" (unranked: {_describe(missing)})" if missing else ""
        if len(ids) != limit:
            problems.append(
                f"layout row has {len(ids)} config ids but the file has {limit} configs; "
                f"a row must rank every config of its file{unranked}"
            )
        elif missing:
            problems.append(f"layout row is not a permutation of 0..{limit - 1}{unranked}")
    outside = [v for v in set(ids.tolist()) if v < 0 or (limit is not None and v >= limit)]
    if outside:
        allowed = "non-negative" if limit is None else f"0..{limit - 1}"
        problems.append(f"config ids outside {allowed}: {_describe(outside)}")
    return problems


def _set_problems(got: set[str], expected: set[str], source: str, why: Mapping[str, str] | None = None) -> list[str]:
    """One problem per missing and per extra ID (the first MAX_LISTED of each); ``why`` adds the known
    reason a missing ID is missing."""
    problems = []
    why = why or {}
    labelled = (("missing ID (in {} but not in the file)", expected - got), ("extra ID (not in {})", got - expected))
    for label, ids in labelled:
        ids = sorted(ids)
        problems += [f"{label.format(source)}: {i}{why.get(i, '')}" for i in ids[:MAX_LISTED]]
        if len(ids) > MAX_LISTED:
            problems.append(f"... and {len(ids) - MAX_LISTED} more {label.split(' (')[0]}s")
    return problems


def _data_ids(data_dir: Path, split: str) -> dict[str, Path]:
    """Submission ID -> .npz file for every file of ``split`` under ``data_dir/npz``."""
    files = {}
    for col in COLLECTIONS:
        split_dir = col.split_dir(data_dir, split)
        if split_dir.is_dir():
            files.update({col.submission_id(p.stem): p for p in sorted(split_dir.glob("*.npz"))})
    return files


def skipped_files(data_dir: Path | str, split: str, collection: Collection | None = None) -> dict[Path, str]:
    """``.npz`` path -> why no model ranked it, for each ``split`` file (of ``collection``, or of every collection)
    the download stage listed as invalid in the dataset's manifest (:func:`tpuperf.collection.invalid_files`):
    the file, its problem, the manifest, that preprocess (``preprocess.on_bad_file: skip``) left it out and, for
    test, that Kaggle refuses a submission without its row. Empty when the manifest lists none (or there is none).
    What a missing submission row (:func:`check_submission`) and a collection without predictions
    (:func:`tpuperf.submission.ensemble.run_ensemble`) say about such files."""
    refused = ": Kaggle refuses a submission without its row" if split == "test" else ""
    return {
        path: (
            f"its {split} file {path} failed validation in the download stage: {why}; listed in "
            f"{Path(data_dir, DATASET_MANIFEST)}: preprocess (on_bad_file: skip) leaves it out, so no model ranked it{refused}"
        )
        for path, why in invalid_files(data_dir, split).items()
        if collection is None or path.parent == collection.split_dir(data_dir, split)
    }


def _check(
    path: Path | str, sample: Path | str | None, data_dir: Path | str | None, split: str
) -> tuple[list[str], dict[str, np.ndarray], dict[str, Path]]:
    """Problems, parsed rows (ID -> config ids) and data files (ID -> .npz) of a submission."""
    problems: list[str] = []
    rows = _read_rows(Path(path), problems)
    if rows is None:
        return problems, {}, {}
    counts = Counter(row_id for _, row_id, _ in rows)
    problems += [f"duplicate ID ({n} rows): {i}" for i, n in counts.items() if n > 1]

    files: dict[str, Path] = {}
    if data_dir is not None:
        files = _data_ids(Path(data_dir), split)
        if not files:
            problems.append(
                f"{data_dir}: no {split} .npz files under npz/ (is it a TpuGraphs data directory? "
                "`tpuperf download` puts the dataset at data.out of params.yaml)"
            )
            return problems, {}, {}
        skipped = skipped_files(data_dir, split)
        why = {row_id: f" ({skipped[path]})" for row_id, path in files.items() if path in skipped}
        problems += _set_problems(set(counts), set(files), f"the {split} files of {data_dir}", why)
    if sample is not None:
        sample_problems: list[str] = []
        sample_rows = _read_rows(Path(sample), sample_problems)
        problems += [f"sample {sample}: {p}" for p in sample_problems]
        if sample_rows is not None:
            problems += _set_problems(set(counts), {r for _, r, _ in sample_rows}, f"sample {Path(sample).name}")

    parsed = {}
    for number, row_id, text in rows:
        try:
            collection, _ = parse_id(row_id)
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        ids, error = _parse_ids(text)
        if error:
            problems.append(f"line {number}: {row_id}: {error}")
            continue
        num_configs = _num_configs(files[row_id]) if row_id in files else None
        problems += [f"line {number}: {row_id}: {p}" for p in _row_problems(collection, ids, num_configs)]
        parsed[row_id] = ids
    return problems, parsed, files


def check_submission(
    path: Path | str, sample: Path | str | None = None, data_dir: Path | str | None = None, split: str = "test"
) -> list[str]:
    """Every problem of a submission CSV, one message each; an empty list means valid.

    Always: header, duplicate IDs, known ID prefixes, integer config ids. With ``sample``:
    exactly its ID set. With ``data_dir`` (a TpuGraphs root with ``npz/``), the full check:
    exactly the ID set of its ``split`` files, and each row what :meth:`~tpuperf.collection.Kind.row_length` asks of its
    file (distinct ids below the file's config count; ``min(5, n)`` for tile, all ``n`` for
    layout: see the module docstring on 1,001-config files). Without ``data_dir`` rows are only
    checked as far as possible without config counts (tile: 5 distinct ids; layout: a
    permutation of 0..len-1).
    """
    return _check(path, sample, data_dir, split)[0]


def write_submission(
    rankings: Mapping[str, Sequence[int] | np.ndarray],
    path: Path | str,
    *,
    data_dir: Path | str,
    sample: Path | str | None = None,
    split: str = "test",
) -> Path:
    """Write ``rankings`` (submission ID -> config ids, predicted-fastest first) as a CSV.

    Give each ID a full ranking: each row keeps its first :meth:`~tpuperf.collection.Kind.row_length` ids, with the
    config count of the ID's file under ``data_dir`` (the ``split`` files; TpuGraphs layout).
    The file is written beside ``path``, fully checked with :func:`check_submission`
    (``sample``, ``data_dir``, ``split`` as there), and renamed into place only when valid;
    otherwise :class:`SubmissionError` is raised and nothing is left at ``path``.
    """
    path = Path(path)
    files = _data_ids(Path(data_dir), split)
    lines = [HEADER]
    for row_id, ranking in rankings.items():
        collection, _ = parse_id(row_id)
        ranking = np.asarray(ranking)
        if ranking.ndim != 1 or (ranking.size and ranking.dtype.kind not in "iu"):
            problem = (
                f"{row_id}: ranking must be a 1-D array of integer config ids, got {ranking.dtype} {ranking.shape}"
            )
            raise SubmissionError(path, [problem])
        kept = ranking
        if row_id in files:  # an ID without a file keeps its whole ranking: the check below refuses it by name
            num_configs = _num_configs(files[row_id])
            kept = ranking[: collection.kind.row_length(num_configs)]
            dropped = ranking[kept.size :]
            if dropped.size and (
                np.unique(ranking).size != ranking.size or dropped.min() < 0 or dropped.max() >= num_configs
            ):
                problem = (
                    f"{row_id}: ranking of {ranking.size} has repeated ids or ids outside 0..{num_configs - 1} "
                    f"beyond the {kept.size} the row keeps"
                )
                raise SubmissionError(path, [problem])
        lines.append(f"{row_id},{';'.join(map(str, kept.tolist()))}")

    def write_checked(tmp: Path) -> None:
        tmp.write_text("\n".join(lines) + "\n")
        problems = check_submission(tmp, sample=sample, data_dir=data_dir, split=split)
        if problems:
            raise SubmissionError(path, problems)

    return write_atomic(path, write_checked)


def _load_runtime(path: Path, collection: Collection) -> np.ndarray:
    runtime = np.concatenate(list(iter_chunks(path, "config_runtime"))).astype(np.float64)
    if collection.kind.normalised_runtime:
        runtime = runtime / np.concatenate(list(iter_chunks(path, "config_runtime_normalizers")))
    return runtime


def score_submission(path: Path | str, data_dir: Path | str, split: str = "valid") -> dict[str, float]:
    """Competition metric of a submission-format CSV against the labelled ``split`` of ``data_dir``.

    Returns ``{collection name: score}`` for each collection present and ``"mean"``: their mean,
    the competition score when all five are present. The file must first pass
    :func:`check_submission` against those files (else :class:`SubmissionError`).
    """
    problems, parsed, files = _check(path, None, data_dir, split)
    if problems:
        raise SubmissionError(path, problems)
    preds: dict[Collection, dict[str, np.ndarray]] = {}
    runtimes: dict[Collection, dict[str, np.ndarray]] = {}
    for row_id, ids in parsed.items():
        collection, graph_id = parse_id(row_id)
        runtime = _load_runtime(files[row_id], collection)
        if not (runtime > 0).all():
            raise ValueError(f"{files[row_id]}: runtimes are not all positive; is {split!r} a labelled split?")
        # A row's order as runtime-like scores: listed configs by position, unlisted ones
        # (beyond a tile row's top 5) after them all. The metrics then see exactly the row.
        pred = np.full(runtime.size, float(len(ids)))
        pred[ids] = np.arange(len(ids))
        preds.setdefault(collection, {})[graph_id] = pred
        runtimes.setdefault(collection, {})[graph_id] = runtime
    left_out = {c.name: len(unranked_graphs(runtimes[c])) for c in COLLECTIONS if c in runtimes}
    if any(left_out.values()):
        log.info(
            "graphs with fewer than 2 distinct runtimes left out of the scores (nothing to rank): %s",
            ", ".join(f"{name} {n}" for name, n in left_out.items() if n),
        )
    scores = {c.name: collection_score(c, preds[c], runtimes[c]) for c in COLLECTIONS if c in preds}
    return {**scores, "mean": competition_score(scores)}
