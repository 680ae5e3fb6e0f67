"""The five TpuGraphs collections, where their files live in the dataset layout, and the two
kinds of collection (:data:`TILE`, :data:`LAYOUT`) with what differs between them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "valid", "test")
DATASET_MANIFEST = (
    "manifest.json"  # beside npz/ in a downloaded dataset (tpuperf.data.download): files, checksums, source
)


@dataclass(frozen=True)
class Kind:
    """What differs between tile and layout collections, as facts of the kind (TpuGraphs dataset README; the competition's Evaluation page).

    ``name``: ``tile`` or ``layout``, the string models store in their Keras config and params.yaml keys
    per kind (``train.samples_per_graph``).
    ``config_per_node``: a layout config sets each configurable node (``node_config_feat``
    [C, Nc, 18] int8 layout dims, fed per node as [N, C, 18]); a tile config is one per graph
    (``config_feat`` [C, 24] float, fed as a context feature).
    ``metric``: the name of the :mod:`tpuperf.metrics` function scoring one graph (looked up by
    :func:`tpuperf.metrics.graph_score`), also the metric name in run reports: ``tile_score``
    (top-5 slowdown) or ``kendall_tau``.
    ``top_k``: how many predicted-fastest config ids a submission row lists (``min(top_k, n)``);
    None lists all ``n`` (a permutation).
    ``normalised_runtime``: the metric compares ``config_runtime / config_runtime_normalizers``
    (tile) rather than raw ``config_runtime`` in ns (layout).
    """

    name: str
    config_per_node: bool
    metric: str
    top_k: int | None
    normalised_runtime: bool

    def __str__(self) -> str:
        return self.name

    def row_length(self, num_configs: int) -> int:
        """Config ids in the submission row of a file with ``num_configs`` configs (``num_configs``
        >= 1, else ValueError): ``min(top_k, n)``, or ``n`` when every config is ranked."""
        if num_configs < 1:
            raise ValueError(f"a file has at least one config, got {num_configs}")
        return num_configs if self.top_k is None else min(self.top_k, num_configs)


TILE = Kind("tile", config_per_node=False, metric="tile_score", top_k=5, normalised_runtime=True)
LAYOUT = Kind("layout", config_per_node=True, metric="kendall_tau", top_k=None, normalised_runtime=False)
KINDS = {k.name: k for k in (TILE, LAYOUT)}


def get_kind(name: str) -> Kind:
    """The :class:`Kind` named ``tile`` or ``layout``; ValueError naming the known kinds otherwise."""
    if name not in KINDS:
        raise ValueError(f"collection kind must be one of {', '.join(KINDS)}, got {name!r}")
    return KINDS[name]


@dataclass(frozen=True)
class Collection:
    """One TpuGraphs collection, e.g. ``layout:nlp:random``."""

    name: str

    @property
    def kind(self) -> Kind:
        """:data:`TILE` (config per graph) or :data:`LAYOUT` (config per configurable node)."""
        return KINDS[self.name.split(":")[0]]

    @property
    def is_tile(self) -> bool:
        return self.kind == TILE

    @property
    def source(self) -> str:
        return self.name.split(":")[1]

    @property
    def search(self) -> str | None:
        parts = self.name.split(":")
        return parts[2] if len(parts) > 2 else None

    @property
    def slug(self) -> str:
        """Filesystem- and DVC-friendly name: ``layout-nlp-random``."""
        return self.name.replace(":", "-")

    def split_dir(self, root: Path | str, split: str) -> Path:
        """Directory of one split in the real layout: ``<root>/npz/layout/nlp/random/train``."""
        return Path(root, "npz", *self.name.split(":"), split)

    def submission_id(self, graph_id: str) -> str:
        """Row ID in the submission CSV: ``layout:nlp:random:<graph>``."""
        return f"{self.name}:{graph_id}"


COLLECTIONS = tuple(
    Collection(n)
    for n in (
        "tile:xla",
        "layout:xla:random",
        "layout:xla:default",
        "layout:nlp:random",
        "layout:nlp:default",
    )
)
BY_NAME = {c.name: c for c in COLLECTIONS}
BY_SLUG = {c.slug: c for c in COLLECTIONS}


def get_collection(name_or_slug: str) -> Collection:
    """Look a collection up by ``layout:nlp:random`` or ``layout-nlp-random``."""
    found = BY_NAME.get(name_or_slug) or BY_SLUG.get(name_or_slug)
    if found is None:
        known = ", ".join(c.name for c in COLLECTIONS)
        raise ValueError(f"unknown collection {name_or_slug!r}; known: {known}")
    return found


def locate(path: Path | str) -> tuple[Collection | None, str | None]:
    """Infer (collection, split) from a path inside the real layout, or (None, None).

    The path as given (made absolute, ``..`` folded) is read first, then with symlinks resolved:
    a file linked into the layout from elsewhere (a flat store, DVC's cache) is where its link is.
    """
    for parts in (Path(os.path.abspath(path)).parts, Path(path).resolve().parts):
        for i in range(len(parts) - 1, -1, -1):
            if parts[i] != "npz":
                continue
            rest = parts[i + 1 :]
            for col in COLLECTIONS:
                segs = tuple(col.name.split(":"))
                if rest[: len(segs)] == segs:
                    split = rest[len(segs)] if len(rest) > len(segs) else None
                    return col, split if split in SPLITS else None
    return None, None


def _manifest(data_root: Path | str) -> dict | None:
    path = Path(data_root, DATASET_MANIFEST)
    return json.loads(path.read_text()) if path.is_file() else None


def data_source(data_root: Path | str) -> str | None:
    """``source`` of the dataset's :data:`DATASET_MANIFEST` (``kaggle``, ``synthetic`` or ``local``: what the
    download stage built it from), None when ``data_root`` has no manifest (files put there by hand)."""
    manifest = _manifest(data_root)
    return manifest.get("source") if manifest else None


def invalid_files(data_root: Path | str, split: str) -> dict[Path, str]:
    """The ``split`` files the download stage found invalid, from the dataset's :data:`DATASET_MANIFEST`
    (``collections.<name>.<split>.invalid``): path (``<data_root>/npz/.../<split>/<file>.npz``, as
    :meth:`Collection.split_dir` builds it) -> problem (``"field: problem"``). Empty when ``data_root``
    has no manifest (files put there by hand: their readers validate them) or the manifest lists none.
    ``preprocess.on_bad_file`` decides what becomes of them (:mod:`tpuperf.data.preprocess`)."""
    manifest = _manifest(data_root) or {}
    found = {}
    for col in COLLECTIONS:
        entry = manifest.get("collections", {}).get(col.name, {}).get(split, {})
        found.update({col.split_dir(data_root, split) / name: why for name, why in entry.get("invalid", {}).items()})
    return found
