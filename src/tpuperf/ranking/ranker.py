"""Rank the configurations of new programs with an exported model (``tpuperf rank``, :func:`tpuperf.rank`).

An exported model (written by :mod:`tpuperf.ranking.export`, the ``export`` DVC stage) is one directory
per collection, ``<export.out>/<collection-slug>/``::

    manifest.json          format and tpuperf version, collection, the ensemble's models with
                           their params.yaml settings, weights and folds, the batch shape the
                           pipeline predicted with, jit_compile, the preprocessing transform
                           (the cache's whole stats.json: feature columns, log columns, means,
                           stds, pruning, the dataset's source: loading an export of synthetic
                           data warns), the opcode ids of the (pruned) train graphs' nodes (a program
                           with others warns: their embedding rows never learnt), outlier_sigma
                           (export.outlier_sigma), valid_member_agreement (the models' agreement on
                           the valid programs) and a fingerprint of the data and code that made it
    <model>/fold_<k>.npz   one member's weights: arrays ``0000``, ``0001``, ... in the order of
                           ``model.get_weights()`` of ``build_model(kind, params)``

Loading needs neither the cache nor the training code: each model is rebuilt with
:func:`tpuperf.models.build_model` and its folds' weights are assigned in turn to one instance
(one traced forward pass per model, not per fold).

Ranking a file applies :func:`tpuperf.data.preprocess.prepare_graph` (the very transform and pruning
the pipeline applied to test files), scores every configuration with every member through
:class:`tpuperf.training.scoring.Scorer` and combines the members with :func:`tpuperf.submission.ensemble.combine`
(per-member rank normalisation, the ensemble's model weights, folds sharing their model's
weight), so a dataset test file gets the ranking of ``submissions/submission.csv``.

What a ranking says (:class:`Ranking`; ``tpuperf rank``'s columns and header, README "Ranking new programs"):

- ``ensemble_score`` per config, in [0, 1]: the score that orders the list,
  :func:`~tpuperf.submission.ensemble.combine`'s weighted mean over the members of the config's normalised rank
  (0 = every member ranks it fastest, 1 = every member slowest). It never decreases down the list, except where a
  tile list (any length) or a layout list cut by ``top`` puts the repeats of a configuration after every distinct
  one: a repeat shows its configuration's score, which may be lower than the distinct config's above it. It is no
  runtime: the members' raw scores are ListMLE/pairwise logits without a unit, and even log runtimes
  (``train.loss: mse``) averaged over members can order configs otherwise than their combined ranks do.
- ``oof_scores``: each scoring model's out-of-fold score on the training graphs (its run report's ``oof_score``,
  which the export carries in the manifest), in the collection's metric ``metric`` (``tile_score`` or
  ``kendall_tau``): how well that model ranked programs it had not trained on.
- ``member_agreement`` per file: the mean Kendall tau-b over pairs of scoring models between their rankings of the
  file's configs (each model's folds combined), None with one model or one config: a low value says the models
  disagree on this program. ``valid_member_agreement`` is the same models' mean of it over the collection's valid
  programs (from their runs' valid predictions; the manifest's ``valid_member_agreement``), the reference to compare
  with; None with one model or no valid program of 2 configs.
- ``outlying_values`` per file: how many of its standardised feature values (node features of the pruned graph,
  and tile config features) lie more than the manifest's ``outlier_sigma`` (``export.outlier_sigma``) train
  standard deviations from the train mean; a file with any is also warned about, naming the feature columns.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import tpuperf
from tpuperf.collection import COLLECTIONS, Collection, get_collection, get_kind, locate
from tpuperf.config import BucketsConfig, ModelConfig, parse
from tpuperf.data.cache import TENSOR_WIDTH, CachedGraph
from tpuperf.data.npz import KIND_FIELDS, DataFormatError, find_npz, read_header
from tpuperf.data.opcodes import opcode_name
from tpuperf.errors import TpuperfError
from tpuperf.provenance import source_fingerprint
from tpuperf.training.batches import TILE_CONFIG_DIM, BatchItem, BatchShape, BucketPlan, to_arrays, to_graph_tensor

# 2: stats carry the pruning mode (prune) and config_edge_length, models config_scope; 3: train_opcodes;
# 4: outlier_sigma (export.outlier_sigma), valid_member_agreement
EXPORT_FORMAT = 4
MANIFEST = "manifest.json"
MANIFEST_KEYS = (
    "collection",
    "models",
    "stats",
    "planning",
    "jit_compile",
    "fingerprint",
    "train_opcodes",
    "outlier_sigma",
    "valid_member_agreement",
)
MEMBER_CHOICES = ("all", "best")  # tpuperf rank --members: the whole exported ensemble, or its top-weighted model
TEST_SPLIT = "test"  # the split name combine() sees: rank rows are scored like test rows


def code_fingerprint() -> str:
    """The manifest's ``fingerprint.code``: :func:`tpuperf.provenance.source_fingerprint`, first 16 hex chars."""
    return source_fingerprint()[:16]


def check_members(members: str) -> None:
    """ValueError unless ``members`` is one of :data:`MEMBER_CHOICES`."""
    if members not in MEMBER_CHOICES:
        raise ValueError(f"members must be one of {', '.join(MEMBER_CHOICES)}, got {members!r}")


class ModelExportError(TpuperfError, ValueError):
    """An exported model that is missing, malformed or does not fit the input; names the file."""


@dataclass
class Ranking:
    """One file's configurations, predicted fastest first (module docstring: what each value means).

    ``config_ids`` int64 (k,): indices into the file's configurations; ``ensemble_score`` float64 (k,) in [0, 1]:
    the combined normalised rank that orders them; ``num_configs``: configurations in the file (k <= num_configs);
    ``metric``: ``tile_score`` or ``kendall_tau``; ``oof_scores``: model -> its out-of-fold ``metric``, for the
    models that scored; ``member_agreement``: mean pairwise Kendall tau-b of those models' rankings, None for one
    model or one config; ``valid_member_agreement``: its mean over the valid programs (None for one model or no
    valid program of 2 configs); ``outlying_values``: count of standardised feature values beyond ``outlier_sigma``.
    """

    path: Path
    collection: str
    config_ids: np.ndarray
    ensemble_score: np.ndarray
    num_configs: int
    metric: str
    oof_scores: dict[str, float]
    member_agreement: float | None
    valid_member_agreement: float | None
    outlying_values: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "collection": self.collection,
            "num_configs": self.num_configs,
            "config_ids": self.config_ids.tolist(),
            "ensemble_score": self.ensemble_score.tolist(),
            "metric": self.metric,
            "oof_scores": dict(self.oof_scores),
            "member_agreement": self.member_agreement,
            "valid_member_agreement": self.valid_member_agreement,
            "outlying_values": self.outlying_values,
        }


def member_agreement(scores: Sequence[np.ndarray]) -> float | None:
    """Mean Kendall tau-b over every pair of ``scores`` (float (c,) each: one model's scores of one file's c
    configs): 1 = the models order the configs alike, 0 = unrelated, -1 = reversed. None for fewer than 2 models or
    2 configs. A pair in which one model scores every config alike counts 0: no order (:func:`tpuperf.metrics.tau_b`,
    as the layout metric counts constant predictions). Scores are rounded to 12 decimals first, so a tie
    that float rounding splits (the mean of two folds' normalised ranks: 0/3 + 3/3 against 1/3 + 2/3) counts as one."""
    from itertools import combinations

    from tpuperf.metrics import tau_b

    if len(scores) < 2 or len(scores[0]) < 2:
        return None
    return float(np.mean([tau_b(np.round(a, 12), np.round(b, 12)) for a, b in combinations(scores, 2)]))


def sample_graph(kind: str, feat_dim: int) -> CachedGraph:
    """A 2-node, 1-config graph of ``kind`` whose only use is creating a model's variables."""
    layout = get_kind(kind).config_per_node
    return CachedGraph(
        graph_id="sample",
        split=TEST_SPLIT,
        node_feat=np.zeros((2, feat_dim), np.float32),
        node_opcode=np.zeros(2, np.int32),
        edge_index=np.array([[1, 0]], np.int32),
        node_ids=np.arange(2, dtype=np.int64),
        config_feat=np.full((1, 1, 18), -1, np.int8) if layout else np.zeros((1, TILE_CONFIG_DIM), np.float32),
        config_node_pos=np.zeros(1, np.int32) if layout else None,
        config_edges=np.zeros((0, 2), np.int32) if layout else None,
        config_tensors=np.zeros((1, 3, TENSOR_WIDTH), np.int32) if layout else None,
        runtime=np.ones(1),
        config_ids=np.zeros(1, np.int64),
    )


def build_member_model(kind: str, model: ModelConfig, feat_dim: int):
    """``build_model(kind, model)`` with its variables created (called on :func:`sample_graph`)."""
    from tpuperf.models import build_model

    shape = BatchShape(graphs=1, nodes=3, edges=1, configs=1, config_nodes=2, config_edges=1)
    model = build_model(kind, model)
    graph, _ = to_graph_tensor(
        to_arrays([BatchItem(sample_graph(kind, feat_dim), np.arange(1))], shape, kind, feat_dim), kind
    )
    model(graph)
    return model


def detect_collection(path: Path, given: Collection | None, model_collection: Collection | None) -> Collection:
    """The collection of one input file: ``given``, else its place in the dataset layout, else
    the model's (when the model ranks a single collection). Raises :class:`ModelExportError`
    when the path and ``given`` disagree or nothing tells, and
    :class:`~tpuperf.data.npz.DataFormatError` when the file's arrays are of the other kind."""
    from_path, _ = locate(path)
    if given is not None and from_path is not None and given != from_path:
        raise ModelExportError(f"{path}: its path says {from_path.name} but the collection given is {given.name}")
    collection = given or from_path or model_collection
    if collection is None:
        raise ModelExportError(
            f"{path}: cannot tell its collection from the path: pass --collection (e.g. layout:xla:random)"
        )
    keys = set(read_header(path))
    other = next(k for k in KIND_FIELDS if k != collection.kind)
    stray = keys & set(KIND_FIELDS[other])
    if stray and not keys & set(KIND_FIELDS[collection.kind]):
        raise DataFormatError(
            path, None, f"holds {other.name} arrays ({', '.join(sorted(stray))}), not {collection.name}'s"
        )
    return collection


class ExportedModel:
    """One collection's exported ensemble, loaded for ranking (no cache, no training code).

    Raises :class:`ModelExportError` naming the file when the directory is not an export, was
    written by another tpuperf or export format version or by other tpuperf sources (its
    ``fingerprint.code`` is not :func:`code_fingerprint`: an edit of the preprocessing or model code
    can change what the same weights compute), or its weights do not fit the models
    its manifest describes (other features or model settings).

    ``strategy``: the tf.distribute strategy scoring runs under (its replicas score different batches of
    a graph at once), e.g. ``select_strategy("cpus", 0)`` (:mod:`tpuperf.training.strategy`) for every
    core of a CPU host; None: TensorFlow's default (one device).
    """

    def __init__(self, directory: Path | str, strategy=None):
        import contextlib

        import tensorflow as tf

        from tpuperf.training.strategy import initialize_devices

        initialize_devices()

        self.dir = Path(directory)
        manifest_path = self.dir / MANIFEST
        if not manifest_path.is_file():
            raise ModelExportError(
                f"{manifest_path}: missing: not an exported model (run `dvc repro export` or `tpuperf export`)"
            )
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelExportError(f"{manifest_path}: unreadable ({exc})") from exc
        m = self.manifest
        made = (m.get("format_version"), m.get("tpuperf_version"))
        if made != (EXPORT_FORMAT, tpuperf.__version__):
            raise ModelExportError(
                f"{manifest_path}: made by tpuperf {made[1]} (export format {made[0]}); this is tpuperf "
                f"{tpuperf.__version__} (format {EXPORT_FORMAT}): re-export it with `tpuperf export`"
            )
        missing = [k for k in MANIFEST_KEYS if k not in m]
        if missing:
            raise ModelExportError(f"{manifest_path}: no {missing} (a partial or hand-edited export: re-export it)")
        self.collection = get_collection(m["collection"])
        made_by, here = m["fingerprint"].get("code"), code_fingerprint()
        if made_by != here:  # the preprocessing or the models may differ with the same weight shapes
            raise ModelExportError(
                f"{manifest_path}: made by other tpuperf sources (code fingerprint {made_by}, these sources "
                f"{here}): re-export it with this code (`dvc repro export@{self.collection.slug}`)"
            )
        self.stats = m["stats"]
        if self.stats.get("data_source") == "synthetic":  # the default pipeline without Kaggle credentials
            warnings.warn(
                f"{manifest_path}: its models were trained on GENERATED data (data.source synthetic), not on "
                "measured runtimes: their rankings of real programs show that the pipeline runs, not what is fast",
                stacklevel=2,
            )
        self.feat_dim = int(self.stats["node_feat_dim"])
        if self.feat_dim != len(self.stats["node_feat"]["columns"]):
            raise ModelExportError(
                f"{manifest_path}: node_feat_dim {self.feat_dim} but the transform keeps "
                f"{len(self.stats['node_feat']['columns'])} columns"
            )
        p = m["planning"]
        b = parse(BucketsConfig, p["buckets"], "planning.buckets", str(manifest_path))
        self.plan = BucketPlan(
            int(p["graphs_per_batch"]),
            float(p["batch_slack"]),
            b.count,
            b.growth,
            b.max_batch_nodes,
            b.predict_config_nodes,
        )
        self.configs = int(p["predict_configs_per_graph"])
        self.jit_compile = bool(m["jit_compile"])
        self.strategy = strategy or tf.distribute.get_strategy()
        self.models: dict[str, Any] = {}
        self.folds: dict[str, dict[int, list[np.ndarray]]] = {}
        self.weights = {name: float(spec["weight"]) for name, spec in m["models"].items()}
        self.opcode_vocab: dict[str, int] = {}  # model -> rows of its opcode embedding (ids 0..rows-1)
        for name, spec in m["models"].items():
            params = parse(ModelConfig, spec["params"], f"models.{name}.params", str(manifest_path))
            self.opcode_vocab[name] = params.opcode_vocab
            with self.strategy.scope() if strategy else contextlib.nullcontext():  # mirrored variables
                model = build_member_model(self.collection.kind.name, params, self.feat_dim)
            self.models[name] = model
            self.folds[name] = {
                int(k): self._read_weights(self.dir / name / f"fold_{k}.npz", model) for k in spec["folds"]
            }
        self._scorers: dict[str, Any] = {}
        self.train_opcodes = np.asarray(m["train_opcodes"], dtype=np.int64)  # sorted ids training saw
        self.oof_scores = {name: float(spec["oof_score"]) for name, spec in m["models"].items()}
        self.outlier_sigma = float(m["outlier_sigma"])  # export.outlier_sigma
        self.valid_agreement = m["valid_member_agreement"]  # {"mean", "graphs"} of the whole export, or None

    def _read_weights(self, path: Path, model) -> list[np.ndarray]:
        try:
            with np.load(path) as npz:
                arrays = [npz[k] for k in sorted(npz.files)]
        except (OSError, ValueError) as exc:
            raise ModelExportError(f"{path}: unreadable weights ({exc})") from exc
        want = [w.shape for w in model.get_weights()]
        got = [a.shape for a in arrays]
        if want != got:
            first = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
            detail = (
                f"variable {first} ({model.weights[first].name}) is {got[first] if first < len(got) else 'missing'}, "
                f"the model built from the manifest needs {want[first] if first < len(want) else 'none'}"
            )
            raise ModelExportError(
                f"{path}: {len(got)} arrays do not fit the model's {len(want)}: {detail} "
                "(made from other features or model settings?)"
            )
        return arrays

    def scorer(self, name: str):
        """Model ``name``'s :class:`~tpuperf.training.scoring.Scorer` (one per model, shared by its
        folds: set a fold's weights first): it plans size buckets from the graphs it scores, as
        the pipeline's does."""
        from tpuperf.training.scoring import Scorer

        if name not in self._scorers:
            self._scorers[name] = Scorer(
                self.models[name],
                self.plan,
                self.configs,
                self.collection.kind.name,
                self.feat_dim,
                self.strategy,
                self.jit_compile,
            )
        return self._scorers[name]

    def member_weights(self, members: str = "all") -> dict[str, float]:
        """Weight per model of the members ``members`` selects (:data:`MEMBER_CHOICES`): ``all``
        = the export's ensemble (as submission.csv), ``best`` = its highest-weighted model alone
        (weight 1, every fold; the first in the manifest on a tie). ValueError for another value."""
        from tpuperf.submission.ensemble import top_model

        check_members(members)
        if members == "all":
            return dict(self.weights)
        return {top_model(self.weights): 1.0}

    def member_scores(self, graphs: Sequence[CachedGraph], models: Iterable[str] | None = None) -> pl.DataFrame:
        """Every member's raw score of every config: rows of the prediction format plus
        ``collection``, ``model`` and ``fold`` (what :func:`tpuperf.submission.ensemble.combine` reads);
        ``models`` restricts the members to those models' folds (default: every model of the export)."""
        from tpuperf.training.scoring import prediction_frame

        frames = []
        for name in self.folds if models is None else models:
            for fold, arrays in self.folds[name].items():
                self.models[name].set_weights(arrays)
                scores = self.scorer(name).score(graphs)
                frames.append(
                    prediction_frame(TEST_SPLIT, graphs, scores).with_columns(
                        collection=pl.lit(self.collection.name), model=pl.lit(name), fold=pl.lit(fold)
                    )
                )
        return pl.concat(frames)

    def _warn_unseen_opcodes(self, g: CachedGraph) -> None:
        """Warn (UserWarning) naming how many of ``g``'s (pruned) nodes have opcodes no train graph's node had, and
        which: their embedding rows kept their random initial values, so the models read those ops as noise."""
        unseen = ~np.isin(g.node_opcode, self.train_opcodes)
        if not unseen.any():
            return
        ids, counts = np.unique(np.asarray(g.node_opcode)[unseen], return_counts=True)
        names = ", ".join(f"{opcode_name(int(i))} ({int(i)}) x{int(c)}" for i, c in zip(ids, counts))
        warnings.warn(
            f"{g.graph_id}: {int(unseen.sum())} of its {len(unseen)} nodes have opcodes the {self.collection.name} "
            f"models never saw in training: {names}; their embeddings are untrained, so the ranking may be poor",
            stacklevel=3,
        )

    def _outlying_values(self, g: CachedGraph) -> int:
        """How many of ``g``'s standardised feature values (node features; tile: config features too) lie beyond
        ``outlier_sigma`` train standard deviations of the train mean; warns (UserWarning) naming the file, the counts
        and the original feature columns when any do: the models never saw such values, so the ranking may be poor."""
        found, total = [], 0
        for name, far in outlying_masks(g, self.outlier_sigma, self.collection.kind.config_per_node).items():
            count = int(far.sum())
            total += count
            if count:
                columns = self.stats[f"{name}_feat"]["columns"]
                cols = ", ".join(str(columns[j]) for j in np.flatnonzero(far.any(axis=0)))
                found.append(f"{count} of its {far.size} {name} feature values (columns {cols})")
        if found:
            warnings.warn(
                f"{g.graph_id}: {' and '.join(found)} lie more than {self.outlier_sigma:g} train standard deviations "
                f"from the {self.collection.name} training data's mean (export.outlier_sigma): the program is unlike "
                "what the models learnt from, so the ranking may be poor",
                stacklevel=3,
            )
        return total

    def rank_graphs(self, graphs: Sequence[CachedGraph], top: int | None = None, members: str = "all") -> list[Ranking]:
        """Rankings of prepared graphs (``graph_id`` = their path), fastest first; ``top`` cuts each, and a cut
        ranking lists every distinct configuration before any repeat (:func:`_same_labels`); ``members``: which
        models score them (:meth:`member_weights`). :class:`ModelExportError` for a graph with an opcode id
        beyond a member's ``opcode_vocab``; a UserWarning for one with opcodes no train graph had, and one for
        one with feature values beyond ``outlier_sigma`` (:meth:`_outlying_values`)."""
        from tpuperf.submission.csv import rankings_from_predictions
        from tpuperf.submission.ensemble import combine

        weights = self.member_weights(members)
        for g in graphs:  # the models clip opcode ids into their embedding tables: no silent merge
            top_id = int(g.node_opcode.max()) if len(g.node_opcode) else -1
            for name in weights:
                vocab = self.opcode_vocab[name]
                if top_id >= vocab:
                    raise ModelExportError(
                        f"{g.graph_id}: opcode id {top_id} is beyond the {vocab}-row opcode "
                        f"embedding of the exported {name}: it cannot rank this program (train with a larger opcode_vocab)"
                    )
        outlying = {}
        for g in graphs:
            self._warn_unseen_opcodes(g)
            outlying[g.graph_id] = self._outlying_values(g)
        scores = self.member_scores(graphs, weights)
        first = {
            (self.collection.name, g.graph_id): same
            for g in graphs
            if (same := _same_labels(self.collection, g, top)) is not None
        }
        combined = combine(scores, weights)  # one row per (graph, config), sorted by config id
        orders = rankings_from_predictions(combined, first)
        ensemble = per_graph_scores(combined)
        agreement = graph_agreements(scores, weights)
        rankings = []
        for g in graphs:
            order = orders[self.collection.submission_id(g.graph_id)]
            keep = order if top is None else order[:top]
            rankings.append(
                Ranking(
                    Path(g.graph_id),
                    self.collection.name,
                    keep.astype(np.int64),
                    ensemble[g.graph_id][keep],
                    g.num_configs,
                    self.collection.kind.metric,
                    {m: self.oof_scores[m] for m in weights},
                    agreement[g.graph_id],
                    self.valid_agreement["mean"] if self.valid_agreement and len(weights) > 1 else None,
                    outlying[g.graph_id],
                )
            )
        return rankings


def outlying_masks(graph: CachedGraph, sigma: float, config_per_node: bool) -> dict[str, np.ndarray]:
    """Which standardised feature values of a prepared ``graph`` lie further than ``sigma`` train standard deviations
    from the train mean (0 once standardised): ``{"node": bool (n, d)}``, plus ``"config": bool (c, d)`` for a tile
    graph (``config_per_node`` False; layout config features are codes -1..5, not standardised)."""
    masks = {"node": np.abs(graph.node_feat) > sigma}
    if not config_per_node:
        masks["config"] = np.abs(graph.config_feat) > sigma
    return masks


def per_graph_scores(combined: pl.DataFrame) -> dict[str, np.ndarray]:
    """graph_id -> float64 (c,) ``pred`` indexed by config id, of :func:`~tpuperf.submission.ensemble.combine`'s rows
    (every config of each graph, config ids 0..c-1 as :func:`tpuperf.data.preprocess.prepare_graph` numbers them)."""
    return {
        gid: rows.sort("config_id")["pred"].to_numpy().astype(np.float64)
        for (gid,), rows in combined.group_by("graph_id", maintain_order=True)
    }


def graph_agreements(scores: pl.DataFrame, models: Iterable[str]) -> dict[str, float | None]:
    """graph_id -> :func:`member_agreement` of ``models`` on it, from member scores in the prediction format with
    ``collection``, ``model`` and ``fold`` (:meth:`ExportedModel.member_scores`, or the runs' fold predictions),
    each model's folds combined as the ensemble combines them (:func:`~tpuperf.submission.ensemble.combine`)."""
    from tpuperf.submission.ensemble import combine

    per_model = [per_graph_scores(combine(scores.filter(pl.col("model") == m), {m: 1.0})) for m in models]
    return {g: member_agreement([model[g] for model in per_model]) for g in per_model[0]}


def _same_labels(collection: Collection, graph: CachedGraph, top: int | None) -> np.ndarray | None:
    """int64 (c,) labels of the identical configurations of a prepared ``collection`` graph, or None (the
    ``same`` of :func:`tpuperf.metrics.rank_configs`). Tile: ``config_first``, always, as the submission's top 5.
    Layout: computed here (:func:`tpuperf.data.preprocess.first_identical` of the config codes, the exact
    ``node_config_feat`` values) when ``top`` cuts the ranking (fewer than its configs), so ``tpuperf rank --top K``
    spends its K slots on distinct configurations (the real test files repeat 6 and 1 of 1,000: 30-44 ms a file,
    ``benchmarks/config_repeats.py --per-file``). A full layout ranking keeps the predicted order: the
    submission's, scored by Kendall tau."""
    if not collection.kind.config_per_node:
        return graph.config_first
    if top is None or top >= graph.num_configs:
        return None
    from tpuperf.data.preprocess import first_identical

    return first_identical(graph.config_feat)


def _model_dirs(model: Path) -> dict[Collection, Path]:
    """Collection -> export directory: ``model`` itself when it is one, else its collection subdirs."""
    if (model / MANIFEST).is_file():
        name = json.loads((model / MANIFEST).read_text()).get("collection")
        try:
            return {get_collection(name): model}
        except (TypeError, ValueError) as exc:
            raise ModelExportError(f"{model / MANIFEST}: collection {name!r}: {exc}") from None
    found = {c: model / c.slug for c in COLLECTIONS if (model / c.slug / MANIFEST).is_file()}
    if not found:
        raise ModelExportError(
            f"{model}: no {MANIFEST} in it or in a <collection-slug>/ subdirectory: "
            "export the models first (`dvc repro export` or `tpuperf export`)"
        )
    return found


@lru_cache(maxsize=8)
def _load(directory: Path, stamp: tuple[int, int]) -> ExportedModel:
    """Loaded exports are reused across :func:`rank` calls while their manifest is unchanged
    (``stamp``: its mtime and inode; an export replaces the whole directory, manifest included)."""
    return ExportedModel(directory)


def load_export(directory: Path) -> ExportedModel:
    """The export at ``directory``, loaded once per process and version of it."""
    try:
        st = (directory / MANIFEST).stat()
    except OSError:
        return ExportedModel(directory)  # raises the missing-manifest error
    return _load(directory.resolve(), (st.st_mtime_ns, st.st_ino))


def _distinct_files(files: list[Path]) -> list[Path]:
    """``files`` without the repeats of a file under another name (``a.npz`` and ``x/../a.npz``, an absolute path, a
    symlink or hard link to it: the same device and inode), each kept under the name it came first with."""
    first: dict[tuple[int, int], Path] = {}
    for f in files:
        st = f.stat()
        first.setdefault((st.st_dev, st.st_ino), f)
    return list(first.values())


def rank(
    files: Iterable[Path | str],
    model: Path | str,
    collection: str | None = None,
    top: int | None = None,
    members: str = "all",
) -> list[Ranking]:
    """Rank every configuration of each TpuGraphs ``.npz`` in ``files``, fastest first.

    ``files``: ``.npz`` files, or directories whose ``.npz`` files (recursively, sorted) are ranked, as
    ``tpuperf validate`` reads them; a file named again (under any path or link) is ranked once, under its first
    name. ``model``: an export directory of one collection, or the export root holding one
    per collection (``<export.out>`` in params.yaml). ``collection`` (name or slug) applies to every
    file; without it each file's collection comes from its path in the dataset layout, or is the
    model's when ``model`` holds one collection. ``top``: keep the first ``top`` configs of each
    file; None keeps the kind's ``top_k`` (5 for tile) and every config for layout; a tile file's ranking, and a
    layout file's cut by ``top``, holds every distinct configuration before any repeat (identical features,
    :func:`tpuperf.metrics.rank_configs`), as the tile submission's does. ``members``:
    ``all`` scores with the export's whole ensemble (the ranking submission.csv holds), ``best``
    with its highest-weighted model's folds only (faster, README "Ranking new programs"). Runtimes
    in the files may be zero or absent (``tpuperf.data.npz.ABSENT_RUNTIMES``).

    Raises :class:`~tpuperf.data.npz.DataFormatError` (missing or malformed arrays, a file of the
    other kind), :class:`ModelExportError` (no export for the file's collection, an export of
    another version or other tpuperf sources, weights that do not fit), FileNotFoundError for a path that does not
    exist or a directory without ``.npz`` files, and ValueError for a bad ``collection`` or ``top``. Every file is
    checked before any is scored. Warns (UserWarning) when the export's models were trained on a synthetic dataset
    (its stats' ``data_source``), per file holding opcodes no (pruned) train graph had, naming them, and per file
    with feature values beyond the manifest's ``outlier_sigma`` (``Ranking.outlying_values``), naming the columns.
    """
    from tpuperf.data.preprocess import prepare_graph

    if top is not None and top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    check_members(members)
    files = list(files)
    if not files:
        raise ValueError("no files to rank")
    # directories are read as `tpuperf validate` reads them; a file named twice is ranked once
    files = _distinct_files(find_npz(files))
    dirs = _model_dirs(Path(model))
    given = get_collection(collection) if collection is not None else None
    only = next(iter(dirs)) if len(dirs) == 1 else None
    per_file = [detect_collection(f, given, only) for f in files]
    for f, c in zip(files, per_file):
        if c not in dirs:
            have = ", ".join(d.name for d in dirs)
            raise ModelExportError(f"{f}: is {c.name} but {model} holds a model for {have} only")
    loaded = {c: load_export(dirs[c]) for c in dict.fromkeys(per_file)}
    graphs = [prepare_graph(f, c, loaded[c].stats) for f, c in zip(files, per_file)]
    rankings = []
    for c, exported in loaded.items():
        mine = [g for g, gc in zip(graphs, per_file) if gc == c]
        rankings += exported.rank_graphs(mine, top if top is not None else c.kind.top_k, members)
    by_path = {r.path: r for r in rankings}
    return [by_path[f] for f in files]
