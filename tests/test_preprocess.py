"""Preprocessing: pruning, dedup, train-only stats, cache round trip, bad files, DVC no-op."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import _write_graph, params_with

from tpuperf.cli import main as cli_main
from tpuperf.collection import SPLITS, get_collection, locate
from tpuperf.config import DataConfig, PreprocessConfig, SyntheticConfig
from tpuperf.data.cache import CacheError, CollectionCache
from tpuperf.data.download import download
from tpuperf.data.npz import DataFormatError, LayoutGraph, load_graph
from tpuperf.data.opcodes import Opcode
from tpuperf.data.preprocess import (
    ConfigDeduper,
    PreprocessError,
    _write_layout_configs,
    apply_transform,
    chain_nodes,
    config_edges,
    induced_edges,
    k_hop_nodes,
    layout_chains,
    layout_tensors,
    prepare_graph,
    preprocess_collection,
    prune,
    signed_log1p,
)
from tpuperf.data.synthetic import layout_runtime, make_layout_graph
from tpuperf.data.tile_features import with_tile_features

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data"
TILE = get_collection("tile:xla")
LAYOUT = get_collection("layout:nlp:random")

# Hand-made graph, rows [u, v] = u consumes v:  0-1-2-3-4-5-6 chain, plus 2 -> 7 -> 8.
CHAIN_EDGES = np.array([[1, 0], [2, 1], [3, 2], [4, 3], [5, 4], [6, 5], [7, 2], [8, 7]], dtype=np.int64)


def settings(**kw) -> PreprocessConfig:
    base = dict(
        out="cache",
        prune="khop",
        hops=1,
        jobs=1,
        on_bad_file="fail",
        log1p_above=100.0,
        std_floor=1e-6,
        chunk_mb=1,
        config_edge_length=8,
    )
    return PreprocessConfig(**{**base, **kw})


def write_layout(path: Path, node_feat, edges, config_ids, config_feat, runtime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        node_feat=np.asarray(node_feat, dtype=np.float32),
        node_opcode=(np.arange(len(node_feat)) % 7).astype(np.uint8),
        edge_index=np.asarray(edges, dtype=np.int64),
        node_config_ids=np.asarray(config_ids, dtype=np.int64),
        node_config_feat=np.asarray(config_feat, dtype=np.float32),
        config_runtime=np.asarray(runtime, dtype=np.int64),
        node_splits=np.array([[0]], dtype=np.int64),
    )


def write_tile(path: Path, node_feat, edges, config_feat, runtime, normalizers) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        node_feat=np.asarray(node_feat, dtype=np.float32),
        node_opcode=(np.arange(len(node_feat)) % 5).astype(np.uint8),
        edge_index=np.asarray(edges, dtype=np.int64),
        config_feat=np.asarray(config_feat, dtype=np.float32),
        config_runtime=np.asarray(runtime, dtype=np.int64),
        config_runtime_normalizers=np.asarray(normalizers, dtype=np.int64),
    )


def random_node_feat(rng: np.random.Generator, n: int) -> np.ndarray:
    """140 columns: 0-9 small, 10-14 wide range (log1p), 15 constant, the rest zero."""
    x = np.zeros((n, 140), dtype=np.float32)
    x[:, :10] = rng.integers(0, 5, (n, 10))
    x[:, 10:15] = rng.integers(1, 10**6, (n, 5))
    x[:, 15] = 3.0
    return x


def layout_codes(rng: np.random.Generator, c: int, nc: int) -> np.ndarray:
    return rng.integers(-1, 6, (c, nc, 18)).astype(np.float32)


def make_layout_dataset(root: Path, seed: int = 0, graphs: dict | None = None) -> None:
    rng = np.random.default_rng(seed)
    for split, count in (graphs or {"train": 3, "valid": 1, "test": 1}).items():
        for g in range(count):
            n = 9 + g
            edges = np.concatenate([CHAIN_EDGES, [[n - 1, 0]]]) if n > 9 else CHAIN_EDGES
            runtime = rng.integers(1, 1000, 6) if split != "test" else np.zeros(6)
            write_layout(
                LAYOUT.split_dir(root, split) / f"{split}{g}.npz",
                random_node_feat(rng, n),
                edges,
                [4, 8],
                layout_codes(rng, 6, 2),
                runtime,
            )


def make_tile_dataset(root: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split, count in (("train", 3), ("valid", 1), ("test", 1)):
        for g in range(count):
            n, c = 4 + g, 5
            edges = np.array([[i + 1, i] for i in range(n - 1)])
            conf = rng.integers(0, 300, (c, 24)).astype(np.float32)
            runtime = rng.integers(1, 1000, c) if split != "test" else np.zeros(c)
            norm = rng.integers(1, 10, c) if split != "test" else np.ones(c)
            write_tile(
                TILE.split_dir(root, split) / f"{split}{g}.npz", random_node_feat(rng, n), edges, conf, runtime, norm
            )


def stats_text(out: Path, collection) -> str:
    return (out / collection.slug / "stats.json").read_text()


# ---------------------------------------------------------------- pruning


@pytest.mark.parametrize(
    "seeds, hops, nodes, edges",
    [
        ([4], 0, list(range(9)), CHAIN_EDGES.tolist()),
        ([4], 1, [3, 4, 5], [[1, 0], [2, 1]]),
        ([4], 2, [2, 3, 4, 5, 6], [[1, 0], [2, 1], [3, 2], [4, 3]]),
        ([0, 8], 1, [0, 1, 7, 8], [[1, 0], [3, 2]]),
        ([0, 8], 2, [0, 1, 2, 7, 8], [[1, 0], [2, 1], [3, 2], [4, 3]]),
    ],
)
def test_k_hop_pruning_on_hand_made_graph(seeds, hops, nodes, edges):
    kept = k_hop_nodes(CHAIN_EDGES, 9, np.array(seeds), hops)
    assert kept.tolist() == nodes
    assert induced_edges(CHAIN_EDGES, kept, 9).tolist() == edges


# Hand-made layout graph: a dot whose output flows through add -> exp -> multiply (a chain),
# read by a reduce and a copy; a tanh below the reduce and an exp below the copy are outside.
Op = Opcode
GRAPH_OPS = [
    (Op.PARAMETER, []),  # 0  dot input
    (Op.PARAMETER, []),  # 1  dot kernel
    (Op.DOT, [0, 1]),  # 2  configurable
    (Op.PARAMETER, []),  # 3  the add's other operand
    (Op.ADD, [2, 3]),  # 4  chain
    (Op.EXPONENTIAL, [4]),  # 5  chain
    (Op.CONSTANT, []),  # 6  reduce init
    (Op.REDUCE, [5, 6]),  # 7  reads the chain; the layout stops here
    (Op.TANH, [7]),  # 8  elementwise, but below the reduce
    (Op.PARAMETER, []),  # 9
    (Op.NEGATE, [9]),  # 10 the multiply's other operand
    (Op.MULTIPLY, [5, 10]),  # 11 chain
    (Op.COPY, [11]),  # 12 reads the chain; a copy changes the layout
    (Op.EXPONENTIAL, [12]),  # 13 below the copy
    (Op.TUPLE, [8, 13]),  # 14 root
]
GRAPH_OPCODES = np.array([op for op, _ in GRAPH_OPS])
GRAPH_EDGES = np.array([[u, v] for u, (_, operands) in enumerate(GRAPH_OPS) for v in operands])


def test_layout_chains_follow_elementwise_consumers_only():
    chain = layout_chains(GRAPH_EDGES, GRAPH_OPCODES, len(GRAPH_OPS), np.array([2]))
    assert np.flatnonzero(chain).tolist() == [2, 4, 5, 11]


@pytest.mark.parametrize(
    "hops, nodes, edges",
    [
        (  # chains + their operands (0, 1, 3, 10) + the ops reading them (7, 12)
            0,
            [0, 1, 2, 3, 4, 5, 7, 10, 11, 12],
            [[2, 0], [2, 1], [4, 2], [4, 3], [5, 4], [6, 5], [8, 5], [8, 7], [9, 8]],
        ),
        (1, [*range(14)], [[u, v] for u, v in GRAPH_EDGES.tolist() if u != 14]),  # + 6, 8, 9, 13; not the root
    ],
)
def test_chain_pruning_on_hand_made_graph(hops, nodes, edges):
    kept = chain_nodes(GRAPH_EDGES, GRAPH_OPCODES, len(GRAPH_OPS), np.array([2]), hops)
    assert kept.tolist() == nodes
    assert induced_edges(GRAPH_EDGES, kept, len(GRAPH_OPS)).tolist() == edges


def test_prune_refuses_an_unknown_mode(tmp_path):
    make_layout_dataset(tmp_path, graphs={"train": 1})
    graph = load_graph(LAYOUT.split_dir(tmp_path, "train") / "train0.npz", LAYOUT, "train", load_configs=False)
    with pytest.raises(ValueError, match="pruning mode must be one of khop, chains, got 'bfs'"):
        prune(graph, "bfs", 1)


def pruned_runtime(g: dict[str, np.ndarray], kept: np.ndarray) -> np.ndarray:
    """The synthetic oracle on the pruned graph. A kept node that lost an operand and reads no
    chain has a layout no config changes: it becomes a source (a parameter) of that layout, as
    does (k-hop pruning only) a node that lost every operand."""
    n, edges = len(g["node_opcode"]), g["edge_index"]
    pruned = induced_edges(edges, kept, n)
    chain = layout_chains(edges, g["node_opcode"], n, g["node_config_ids"])
    reads_chain = np.zeros(n, dtype=bool)
    reads_chain[edges[chain[edges[:, 1]], 0]] = True
    before, after = np.bincount(edges[:, 0], minlength=n)[kept], np.bincount(pruned[:, 0], minlength=len(kept))
    source = (before > after) & (~reads_chain[kept] | (after == 0))
    opcode = np.where(source, Opcode.PARAMETER, g["node_opcode"][kept])
    positions = np.searchsorted(kept, g["node_config_ids"])
    return layout_runtime(g["node_feat"][kept], opcode, pruned, positions, g["node_config_feat"])


def test_chains_keep_every_cost_a_layout_choice_changes():
    """On synthetic graphs, the oracle runtime of the chain-pruned graph differs from the full
    graph's by the same amount for every config: the dropped nodes cost what they cost whatever
    the layouts. 1-hop pruning loses some of it."""
    rng = np.random.default_rng(5)
    khop_errors = []
    for source, search in (("xla", "random"), ("nlp", "default"), ("xla", "default"), ("nlp", "random")):
        g = make_layout_graph(rng, 150, 12, 40, source=source, search=search, operand_order=True)
        n, seeds = len(g["node_opcode"]), g["node_config_ids"]
        full = layout_runtime(g["node_feat"], g["node_opcode"], g["edge_index"], seeds, g["node_config_feat"])
        kept = chain_nodes(g["edge_index"], g["node_opcode"], n, seeds, 0)
        assert len(kept) < 0.8 * n
        assert np.ptp(full - pruned_runtime(g, kept)) < 1e-9 * np.ptp(full)
        one_hop = k_hop_nodes(g["edge_index"], n, seeds, 1)
        khop_errors.append(np.ptp(full - pruned_runtime(g, one_hop)) / np.ptp(full))
    assert max(khop_errors) > 1e-3


# rows [u, v] = u consumes v; configurable 0, 3, 5, 9, 10. 0 -> 1 -> 2 -> 3 (3 edges), 3 -> 4 -> 5
# (2), 5 -> 6 -> 7 -> 8 -> 9 (4), 5 -> 10 (1); 0 reaches 5 only through configurable 3; 11 -> 3
# is a branch into a configurable node from a non-configurable source.
CONFIG_GRAPH = np.array(
    [[1, 0], [2, 1], [3, 2], [4, 3], [5, 4], [6, 5], [7, 6], [8, 7], [9, 8], [10, 5], [3, 11]], dtype=np.int64
)
CONFIGURABLE = np.array([0, 3, 5, 9, 10])


@pytest.mark.parametrize(
    "length, links",
    [
        (1, [[4, 2]]),
        (2, [[2, 1], [4, 2]]),
        (3, [[1, 0], [2, 1], [4, 2]]),
        (4, [[1, 0], [2, 1], [3, 2], [4, 2]]),
        (9, [[1, 0], [2, 1], [3, 2], [4, 2]]),
    ],
)
def test_config_edges_follow_non_configurable_paths_up_to_the_length(length, links):
    """Row [i, j]: configurable i reads configurable j through non-configurable nodes only
    (positions in the configurable list); never through configurable 3, never longer than the bound."""
    got = config_edges(CONFIG_GRAPH, 12, CONFIGURABLE, length)
    assert got.tolist() == links and got.dtype == np.int32
    assert config_edges(CONFIG_GRAPH, 12, CONFIGURABLE[::-1], 9).tolist() == [[0, 2], [1, 2], [2, 3], [3, 4]]
    assert config_edges(CONFIG_GRAPH, 12, np.zeros(0, np.int64), 3).shape == (0, 2)
    with pytest.raises(ValueError, match="path length must be >= 1"):
        config_edges(CONFIG_GRAPH, 12, CONFIGURABLE, 0)


def test_cached_config_edges_come_from_the_unpruned_graph(tmp_path):
    """Pruning drops the chain's interior (hops 0 keeps it); the config edges still link its ends."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        write_layout(
            LAYOUT.split_dir(tmp_path / "raw", split) / f"{split}0.npz",
            random_node_feat(rng, 12),
            CONFIG_GRAPH,
            CONFIGURABLE,
            layout_codes(rng, 4, 5),
            rng.integers(1, 1000, 4) if split == "train" else np.zeros(4),
        )
    for hops in (0, 1):
        out = tmp_path / f"cache{hops}"
        preprocess_collection(tmp_path / "raw", out, LAYOUT, settings(hops=hops, config_edge_length=4), progress=False)
        cache = CollectionCache(out, LAYOUT)
        g = cache.load("train", "train0")
        assert g.config_edges.tolist() == [[1, 0], [2, 1], [3, 2], [4, 2]]
        assert (7 in g.node_ids.tolist()) == (hops == 0) and g.num_config_edges == 4  # 5 -> 6 -> 7 -> 8 -> 9
        assert cache.stats["config_edge_length"] == 4 and cache.index["num_config_edges"].to_list() == [4, 4]


@pytest.mark.parametrize("hops, nodes", [(0, list(range(9))), (1, [3, 4, 5, 7, 8]), (2, [2, 3, 4, 5, 6, 7, 8])])
def test_pruned_graph_in_cache_maps_back_to_original_ids(tmp_path, hops, nodes):
    make_layout_dataset(tmp_path / "raw", graphs={"train": 1})
    preprocess_collection(tmp_path / "raw", tmp_path / "cache", LAYOUT, settings(hops=hops), progress=False)
    g = CollectionCache(tmp_path / "cache", LAYOUT).load("train", "train0")
    assert g.node_ids.tolist() == nodes
    assert g.node_ids[g.config_node_pos].tolist() == [4, 8]
    original = {tuple(e) for e in CHAIN_EDGES.tolist() if e[0] in nodes and e[1] in nodes}
    assert {tuple(e) for e in g.node_ids[g.edge_index].tolist()} == original
    assert g.edge_index.dtype == np.int32 and g.node_feat.shape[0] == len(nodes)


# ---------------------------------------------------------------- dedup


def _rows(*labels: int) -> np.ndarray:
    """Layout configs (c, 2, 18) where equal labels give identical rows."""
    return np.stack([np.full((2, 18), lab, dtype=np.float32) for lab in labels])


def test_dedup_keeps_min_runtime_and_first_config_id_across_chunks(tmp_path):
    path = tmp_path / "g.npz"
    runtime = np.array([5, 3, 2, 4, 7, 1], dtype=np.int64)
    write_layout(path, np.zeros((9, 140)), CHAIN_EDGES, [4, 8], _rows(0, 1, 0, 2, 1, 0), runtime)
    out = tmp_path / "config_feat.npy"
    # one config row is 2*18*4 = 144 bytes: 150-byte chunks stream one config at a time
    ids, kept_runtime, digest = _write_layout_configs(path, out, runtime, dedup=True, chunk_bytes=150)
    assert ids.tolist() == [0, 1, 3]
    assert kept_runtime.tolist() == [1, 3, 4]
    written = np.load(out, mmap_mode="r")
    assert written.dtype == np.int8 and written.shape == (3, 2, 18)
    np.testing.assert_array_equal(written[:, 0, 0], [0, 1, 2])
    # the digest covers exactly the kept rows, whatever the chunking
    assert digest.tobytes() == hashlib.blake2b(np.ascontiguousarray(written).tobytes(), digest_size=16).digest()
    _, _, one_chunk = _write_layout_configs(path, tmp_path / "again.npy", runtime, dedup=True, chunk_bytes=1 << 20)
    np.testing.assert_array_equal(one_chunk, digest)


def test_dedup_only_in_train_split(tmp_path):
    raw = tmp_path / "raw"
    runtime = [5, 3, 2, 4, 7, 1]
    for split in SPLITS:
        rt = np.zeros(6) if split == "test" else runtime
        write_layout(
            LAYOUT.split_dir(raw, split) / "g.npz",
            np.ones((9, 140)) * np.arange(9)[:, None],
            CHAIN_EDGES,
            [4, 8],
            _rows(0, 1, 0, 2, 1, 0),
            rt,
        )
    report = preprocess_collection(raw, tmp_path / "cache", LAYOUT, settings(), progress=False)
    cc = CollectionCache(tmp_path / "cache", LAYOUT)
    train, valid = cc.load("train", "g"), cc.load("valid", "g")
    assert train.config_ids.tolist() == [0, 1, 3] and train.runtime.tolist() == [1, 3, 4]
    assert valid.config_ids.tolist() == list(range(6)) and valid.runtime.tolist() == runtime
    assert cc.load("test", "g").num_configs == 6
    assert cc.load("test", "g").config_first is None  # layout ranks every config: no top K to keep distinct
    with pytest.raises(CacheError, match="layout:nlp:random graphs have no config_first"):
        cc.config_first("test")
    assert report["splits"]["train"]["configs_original"] == 6 and report["splits"]["train"]["configs_kept"] == 3
    row = cc.index.filter(cc.index["split"] == "train").row(0, named=True)
    assert row["num_configs"] == 3 and row["num_configs_original"] == 6


def test_tile_dedup_keeps_min_normalised_runtime(tmp_path):
    raw = tmp_path / "raw"
    conf = np.repeat(np.arange(4, dtype=np.float32)[[0, 1, 0, 1]][:, None], 24, axis=1)
    edges = [[1, 0]]
    write_tile(
        TILE.split_dir(raw, "train") / "k.npz",
        np.random.default_rng(0).random((2, 140)),
        edges,
        conf,
        [8, 9, 6, 30],
        [2, 3, 1, 3],
    )
    preprocess_collection(raw, tmp_path / "cache", TILE, settings(), progress=False)
    g = CollectionCache(tmp_path / "cache", TILE).load("train", "k")
    assert g.config_ids.tolist() == [0, 1]
    assert g.runtime.tolist() == [4.0, 3.0]  # min(8/2, 6/1) and min(9/3, 30/3)
    assert g.config_first.tolist() == [0, 1]  # deduplicated: each is the first of its features


def test_tile_valid_and_test_keep_repeats_and_record_the_first_identical_config(tmp_path):
    """valid/test keep every config (each has a row to rank); config_first says which are the same configuration,
    for a top 5 of distinct ones; `tpuperf rank` prepares the same array from the raw file."""
    raw = tmp_path / "raw"
    conf = np.repeat(np.array([3, 1, 3, 2, 1, 3], np.float32)[:, None], 24, axis=1)
    for split in SPLITS:
        write_tile(
            TILE.split_dir(raw, split) / "k.npz",
            np.random.default_rng(0).random((2, 140)),
            [[1, 0]],
            conf,
            np.zeros(6) if split == "test" else [8, 9, 6, 30, 7, 5],
            np.ones(6),
        )
    preprocess_collection(raw, tmp_path / "cache", TILE, settings(), progress=False)
    cc = CollectionCache(tmp_path / "cache", TILE)
    for split in ("valid", "test"):
        assert cc.load(split, "k").config_first.tolist() == [0, 1, 0, 3, 1, 0]
        assert cc.config_first(split)["k"].tolist() == [0, 1, 0, 3, 1, 0]
    assert cc.load("train", "k").config_first.tolist() == cc.load("train", "k").config_ids.tolist() == [0, 1, 3]
    ranked = prepare_graph(TILE.split_dir(raw, "test") / "k.npz", TILE, cc.stats)
    assert ranked.config_first.tolist() == [0, 1, 0, 3, 1, 0]


def test_deduper_hashes_rows_not_objects():
    d = ConfigDeduper(np.array([3.0, 1.0, 2.0]))
    assert d.add(np.array([[1, 2], [1, 2], [2, 1]], dtype=np.int8), 0).tolist() == [0, 2]
    assert d.config_ids == [0, 2] and d.runtime == [1.0, 2.0]


# ---------------------------------------------------------------- leakage and transform


@pytest.mark.parametrize("collection", [TILE, LAYOUT])
def test_stats_fitted_on_train_only(tmp_path, collection):
    make = make_tile_dataset if collection.is_tile else make_layout_dataset
    raw = tmp_path / "raw"
    make(raw)
    preprocess_collection(raw, tmp_path / "a", collection, settings(), progress=False)

    def perturb(split: str) -> None:
        for path in collection.split_dir(raw, split).glob("*.npz"):
            arrays = dict(np.load(path))
            arrays["node_feat"] = arrays["node_feat"] * 1000 + 7
            key = "config_feat" if collection.is_tile else "node_config_feat"
            arrays[key] = arrays[key][::-1].copy()
            np.savez_compressed(path, **arrays)

    perturb("valid")
    perturb("test")
    preprocess_collection(raw, tmp_path / "b", collection, settings(), progress=False)
    assert stats_text(tmp_path / "b", collection) == stats_text(tmp_path / "a", collection)
    perturb("train")
    preprocess_collection(raw, tmp_path / "c", collection, settings(), progress=False)
    assert stats_text(tmp_path / "c", collection) != stats_text(tmp_path / "a", collection)


def expected_transform(x: np.ndarray, train: np.ndarray, threshold: float, drop_constant: bool) -> np.ndarray:
    """The documented transform, computed directly with numpy from the train rows."""
    keep = train.max(0) > train.min(0) if drop_constant else np.ones(train.shape[1], dtype=bool)
    wide = np.abs(train).max(0) > threshold
    t = np.where(wide, signed_log1p(train.astype(np.float64)), train)
    v = np.where(wide, signed_log1p(x.astype(np.float64)), x)
    std = t.std(0)
    std = np.where(std < 1e-6, 1.0, std)
    return ((v - t.mean(0)) / std)[:, keep]


def test_layout_cache_round_trip_equals_direct_computation(tmp_path):
    raw = tmp_path / "raw"
    make_layout_dataset(raw)
    preprocess_collection(raw, tmp_path / "cache", LAYOUT, settings(hops=1), progress=False)
    cc = CollectionCache(tmp_path / "cache", LAYOUT)
    npz = {(s, p.stem): dict(np.load(p)) for s in SPLITS for p in LAYOUT.split_dir(raw, s).glob("*.npz")}
    kept = {key: np.flatnonzero(np.isin(np.arange(len(d["node_feat"])), [3, 4, 5, 7, 8])) for key, d in npz.items()}
    train = np.concatenate([d["node_feat"][kept[k]] for k, d in npz.items() if k[0] == "train"])
    assert cc.stats["node_feat"]["columns"] == list(range(15))  # 15 constant, 16+ zero
    assert cc.stats["node_feat"]["log_columns"] == list(range(10, 15))
    assert cc.node_feat_dim == 15 and cc.config_feat_shape == (2, 18)
    assert cc.stats["max_nodes"] == 5 and cc.stats["max_config_nodes"] == 2
    assert sorted(cc.graph_ids("train")) == ["train0", "train1", "train2"]
    for (split, gid), d in npz.items():
        g = cc.load(split, gid)
        assert g.node_ids.tolist() == kept[(split, gid)].tolist()
        np.testing.assert_allclose(
            g.node_feat, expected_transform(d["node_feat"][g.node_ids], train, 100.0, True), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_array_equal(g.node_opcode, d["node_opcode"][g.node_ids])
        np.testing.assert_array_equal(g.config_feat, d["node_config_feat"][g.config_ids].astype(np.int8))
        np.testing.assert_array_equal(g.runtime, d["config_runtime"][g.config_ids])
        assert isinstance(g.config_feat, np.memmap) and isinstance(g.runtime, np.memmap)
        assert g.node_ids[g.config_node_pos].tolist() == d["node_config_ids"].tolist()


def test_tile_cache_round_trip_equals_direct_computation(tmp_path):
    raw = tmp_path / "raw"
    make_tile_dataset(raw)
    preprocess_collection(raw, tmp_path / "cache", TILE, settings(), progress=False)
    cc = CollectionCache(tmp_path / "cache", TILE)
    npz = {(s, p.stem): dict(np.load(p)) for s in SPLITS for p in TILE.split_dir(raw, s).glob("*.npz")}
    train_nodes = np.concatenate([d["node_feat"] for k, d in npz.items() if k[0] == "train"])
    columns = {
        k: with_tile_features(d["node_feat"], d["node_opcode"], d["edge_index"], d["config_feat"])
        for k, d in npz.items()
    }
    train_conf = np.concatenate([np.unique(c, axis=0) for k, c in columns.items() if k[0] == "train"])
    assert cc.config_feat_shape == (30,) and cc.stats["config_feat"]["log_columns"][:24] == list(range(24))
    for (split, gid), d in npz.items():
        g = cc.load(split, gid)
        assert g.config_node_pos is None and g.node_ids.tolist() == list(range(len(d["node_feat"])))
        np.testing.assert_allclose(
            g.node_feat, expected_transform(d["node_feat"], train_nodes, 100.0, True), rtol=1e-5, atol=1e-5
        )
        conf = expected_transform(columns[split, gid][g.config_ids], train_conf, 100.0, False)
        np.testing.assert_allclose(g.config_feat, conf, rtol=1e-5, atol=1e-5)
        target = d["config_runtime"] / d["config_runtime_normalizers"]
        np.testing.assert_allclose(g.runtime, target[g.config_ids])


# ---------------------------------------------------------------- bad files, atomicity


def test_bad_file_fail_keeps_previous_cache_and_leaves_no_temp(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "cache"
    make_layout_dataset(raw)
    preprocess_collection(raw, out, LAYOUT, settings(), progress=False)
    before = stats_text(out, LAYOUT)
    bad = LAYOUT.split_dir(raw, "valid") / "broken.npz"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(DataFormatError, match="broken.npz.*unreadable"):
        preprocess_collection(raw, out, LAYOUT, settings(on_bad_file="fail"), progress=False)
    assert stats_text(out, LAYOUT) == before
    assert sorted(p.name for p in out.iterdir()) == [LAYOUT.slug]


def test_a_feature_the_transform_takes_beyond_float32_names_the_npz(tmp_path):
    """A finite valid-split feature far beyond the train data (3e38 where train has mean and std 0.25) overflows
    float32 once standardised: the error named the staging directory's node_feat.npy, a file gone once the stage
    failed; it names the .npz it came from."""
    raw = tmp_path / "raw"
    train_feat = np.stack([np.zeros(140), np.full(140, 0.5)])
    write_tile(
        TILE.split_dir(raw, "train") / "k.npz", train_feat, [[1, 0]], np.arange(48).reshape(2, 24), [8, 9], [2, 3]
    )
    wide = train_feat.copy()
    wide[1, 0] = 3e38
    valid = TILE.split_dir(raw, "valid") / "v.npz"
    write_tile(valid, wide, [[1, 0]], np.arange(48).reshape(2, 24), [8, 9], [2, 3])
    with pytest.raises(DataFormatError, match=rf"^{valid}: node_feat: column 0: value 3e\+38 overflows float32"):
        preprocess_collection(raw, tmp_path / "cache", TILE, settings(), progress=False)


def test_bad_file_skip_is_reported(tmp_path, caplog):
    raw, out = tmp_path / "raw", tmp_path / "cache"
    make_layout_dataset(raw)
    bad = LAYOUT.split_dir(raw, "train") / "outofrange.npz"
    codes = layout_codes(np.random.default_rng(1), 6, 2)
    codes[3, 1, 5] = 7  # minor-to-major entries must be -1..5
    write_layout(bad, np.zeros((9, 140)), CHAIN_EDGES, [4, 8], codes, np.arange(1, 7))
    with caplog.at_level(logging.INFO, logger="tpuperf.data.preprocess"):
        report = preprocess_collection(raw, out, LAYOUT, settings(on_bad_file="skip", jobs=2), progress=False)
    assert report["skipped"] == [{"path": str(bad), "reason": "node_config_feat: value 7.0 is not an integer in -1..5"}]
    assert json.loads((out / LAYOUT.slug / "report.json").read_text())["skipped"] == report["skipped"]
    assert "outofrange" not in CollectionCache(out, LAYOUT).graph_ids("train")
    assert not (out / LAYOUT.slug / "train" / "outofrange").exists()
    assert "skipped" in caplog.text and "outofrange.npz" in caplog.text


def test_node_splits_rank_1_rank_2_or_absent_preprocess_with_on_bad_file_fail(tmp_path):
    """node_splits is a hint the pipeline does not use: 1-D (the official README), 2-D (the real
    files) or missing must not mark a file bad, so on_bad_file: fail still builds the cache."""
    raw, out = tmp_path / "raw", tmp_path / "cache"
    make_layout_dataset(raw)  # train0..2 store node_splits (1, 1), valid0 and test0 too
    files = sorted(LAYOUT.split_dir(raw, "train").glob("*.npz"))
    for path, stored in zip(files, ({"node_splits": np.array([0, 5], np.int64)}, {}, None)):
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files if k != "node_splits" or stored is None}
        np.savez_compressed(path, **arrays, **(stored or {}))
    with np.load(files[0]) as a, np.load(files[1]) as b, np.load(files[2]) as c:
        assert a["node_splits"].shape == (2,) and "node_splits" not in b.files and c["node_splits"].shape == (1, 1)
    report = preprocess_collection(raw, out, LAYOUT, settings(on_bad_file="fail"), progress=False)
    assert report["skipped"] == []
    assert sorted(CollectionCache(out, LAYOUT).graph_ids("train")) == ["train0", "train1", "train2"]
    assert report["splits"]["train"]["graphs"] == 3


def downloaded_with_invalid_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A layout dataset through the download stage (data.source local) with one invalid train file (a layout
    config value 7) and one invalid test file (not a zip): the stage keeps both and lists them in its manifest.
    Returns (data root, train file, test file)."""
    src = tmp_path / "src"
    make_layout_dataset(src)
    (src / "sample_submission.csv").write_text(f"ID,TopConfigs\n{LAYOUT.submission_id('test0')},0;1;2;3;4;5\n")
    codes = layout_codes(np.random.default_rng(1), 6, 2)
    codes[3, 1, 5] = 7  # minor-to-major entries must be -1..5
    write_layout(
        LAYOUT.split_dir(src, "train") / "outofrange.npz",
        np.zeros((9, 140)),
        CHAIN_EDGES,
        [4, 8],
        codes,
        np.arange(1, 7),
    )
    (LAYOUT.split_dir(src, "test") / "broken.npz").write_bytes(b"not a zip archive")
    data = DataConfig(
        source="local",
        dir=str(src),
        out=str(tmp_path / "raw"),
        fingerprint=str(tmp_path / "source.json"),
        competition="predict-ai-model-runtime",
        synthetic=SyntheticConfig(preset="tiny", seed=0),
        jobs=1,
    )
    manifest = download(data)
    raw = Path(data.out)
    assert manifest["num_invalid"] == 2
    return raw, LAYOUT.split_dir(raw, "train") / "outofrange.npz", LAYOUT.split_dir(raw, "test") / "broken.npz"


CONFIG_PROBLEM = "node_config_feat: value 7.0 is not an integer in -1..5"


def test_files_the_download_listed_invalid_stop_preprocess_by_name_with_on_bad_file_fail(tmp_path, monkeypatch):
    """The download used to refuse such a dataset outright; now it lists the files and on_bad_file decides here,
    before any file is read."""
    raw, train_bad, test_bad = downloaded_with_invalid_files(tmp_path)
    out = tmp_path / "cache"

    def must_not_run(*args, **kwargs):
        raise AssertionError("a file was read although preprocess had to stop first")

    monkeypatch.setattr("tpuperf.data.preprocess.prepare_file", must_not_run)
    with pytest.raises(PreprocessError) as info:
        preprocess_collection(raw, out, LAYOUT, settings(on_bad_file="fail"), progress=False)
    message = str(info.value)
    assert message.startswith(
        f"{LAYOUT.name}: 2 file(s) failed validation in the download stage (listed as invalid in {raw}/manifest.json): "
        f"{train_bad}: {CONFIG_PROBLEM}; {test_bad}: unreadable or truncated archive (File is not a zip file). "
        "preprocess.on_bad_file is 'fail': "
    )
    assert "on_bad_file: skip" in message and not out.exists()


def test_files_the_download_listed_invalid_are_skipped_and_reported_with_on_bad_file_skip(tmp_path, caplog):
    raw, train_bad, test_bad = downloaded_with_invalid_files(tmp_path)
    out = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="tpuperf.data.preprocess"):
        report = preprocess_collection(raw, out, LAYOUT, settings(on_bad_file="skip"), progress=False)
    assert report["skipped"] == [
        {"path": str(test_bad), "reason": "unreadable or truncated archive (File is not a zip file)"},
        {"path": str(train_bad), "reason": CONFIG_PROBLEM},
    ]
    assert json.loads((out / LAYOUT.slug / "report.json").read_text())["skipped"] == report["skipped"]
    cache = CollectionCache(out, LAYOUT)
    assert sorted(cache.graph_ids("train")) == ["train0", "train1", "train2"] and cache.graph_ids("test") == ["test0"]
    assert report["splits"]["test"] == {**report["splits"]["test"], "files": 2, "graphs": 1}
    assert "1 test file(s) skipped: their submission rows will be missing" in caplog.text
    assert str(test_bad) in caplog.text


def test_no_train_data_is_a_clear_error(tmp_path):
    make_layout_dataset(tmp_path / "raw", graphs={"test": 1})
    with pytest.raises(
        PreprocessError,
        match=rf"no train .npz files under {tmp_path}/raw/npz/\S+/train: cannot fit the feature transform. Add this "
        rf"collection's train files to the dataset \(data.dir for data.source local\) or leave {LAYOUT.slug} out of "
        r"`collections` in params.yaml",
    ):
        preprocess_collection(tmp_path / "raw", tmp_path / "cache", LAYOUT, settings(), progress=False)
    assert not (tmp_path / "cache" / LAYOUT.slug).exists()


def test_parallel_jobs_give_the_same_cache(tmp_path):
    make_layout_dataset(tmp_path / "raw")
    for jobs in (1, 2):
        preprocess_collection(tmp_path / "raw", tmp_path / f"j{jobs}", LAYOUT, settings(jobs=jobs), progress=False)
    assert stats_text(tmp_path / "j1", LAYOUT) == stats_text(tmp_path / "j2", LAYOUT)
    a, b = CollectionCache(tmp_path / "j1", LAYOUT), CollectionCache(tmp_path / "j2", LAYOUT)
    assert a.index.equals(b.index)
    np.testing.assert_array_equal(a.load("valid", "valid0").node_feat, b.load("valid", "valid0").node_feat)


def test_content_hash_follows_the_written_arrays(tmp_path):
    raw = tmp_path / "raw"
    make_layout_dataset(raw)
    make_tile_dataset(raw)

    def hashes(out: str, collection, **kw) -> dict[str, str]:
        preprocess_collection(raw, tmp_path / out, collection, settings(**kw), progress=False)
        return CollectionCache(tmp_path / out, collection).content_hashes("train")

    for collection in (LAYOUT, TILE):
        first = hashes("a", collection)
        assert len(first) == 3 and len(set(first.values())) == 3
        assert all(len(h) == 32 and int(h, 16) >= 0 for h in first.values())
        assert hashes("b", collection, jobs=2, chunk_mb=2) == first  # same data, same hashes
        path = collection.split_dir(raw, "train") / "train1.npz"
        with np.load(path) as npz:
            runtime = npz["config_runtime"]
        relabelled = np.roll(runtime, 1)
        assert not np.array_equal(relabelled, runtime)
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
        np.savez_compressed(path, **{**arrays, "config_runtime": relabelled})
        changed = hashes("c", collection)
        assert changed["train1"] != first["train1"]
        assert {g: h for g, h in changed.items() if g != "train1"} == {g: h for g, h in first.items() if g != "train1"}
    wider = hashes("d", LAYOUT, hops=2)  # the 9-node graphs keep more nodes with 2 hops
    assert wider["train0"] != hashes("e", LAYOUT)["train0"]


# ---------------------------------------------------------------- real files, CLI, synthetic, DVC


@pytest.mark.skipif(not REAL_DATA.exists(), reason=f"real TpuGraphs sample files not found at {REAL_DATA}")
@pytest.mark.parametrize(
    "path, nodes, kept",
    [
        ("nlp/random/test/23559853d9702baaaacbb0c83fd32266.npz", 1096, 420),
        ("xla/default/test/cd708819d3f5103afd6460b15e74eaf3.npz", 490, 166),
        ("xla/default/train/unet3d.npz", 2774, 965),
        ("xla/random/train/openai_v0_rnn_optimized.npz", 1277, 297),
    ],
)
def test_chain_pruning_of_real_layout_files(path, nodes, kept):
    raw = np.load(REAL_DATA / "npz" / "layout" / path)
    edges, opcode, seeds = raw["edge_index"], raw["node_opcode"], raw["node_config_ids"]
    assert set(opcode[seeds].tolist()) <= {Opcode.CONVOLUTION, Opcode.DOT, Opcode.RESHAPE}
    ids = chain_nodes(edges, opcode, nodes, seeds, 0)
    assert len(opcode) == nodes and len(ids) == kept
    is_seed = np.isin(np.arange(nodes), seeds)
    touching = np.union1d(edges[is_seed[edges[:, 1]], 0], edges[is_seed[edges[:, 0]], 1])
    assert np.isin(touching, ids).all()  # every operand and consumer of a configurable node


@pytest.mark.skipif(not REAL_DATA.exists(), reason=f"real TpuGraphs sample files not found at {REAL_DATA}")
def test_real_layout_files(tmp_path):
    col = get_collection("layout:xla:default")
    preprocess_collection(REAL_DATA, tmp_path, col, settings(hops=2), progress=False)
    cc = CollectionCache(tmp_path, col)
    train = cc.load("train", "unet3d")
    raw = np.load(col.split_dir(REAL_DATA, "train") / "unet3d.npz")
    unique = np.unique(raw["node_config_feat"].reshape(len(raw["config_runtime"]), -1), axis=0)
    assert train.num_configs == len(unique) < len(raw["config_runtime"])
    assert train.num_nodes < len(raw["node_feat"])
    test = cc.load("test", "cd708819d3f5103afd6460b15e74eaf3")
    assert test.num_configs == 1000 and test.config_ids.tolist() == list(range(1000))
    preprocess_collection(REAL_DATA, tmp_path / "chains", col, settings(prune="chains", hops=0), progress=False)
    chains = CollectionCache(tmp_path / "chains", col)
    assert chains.stats["prune"] == "chains" and chains.load("train", "unet3d").num_nodes == 965
    assert not test.runtime.any()


def test_layout_tensors_of_a_hand_made_graph():
    """Each configurable node's output and operands (lowest ids first) with raw dims, own layout
    (-1 past the rank) and bytes per element from the element-type column; missing operands zero."""
    feat = np.zeros((4, 140), np.float32)

    def tensor(node, type_col, dims, layout):
        feat[node, type_col] = 1
        feat[node, 21 : 21 + len(dims)] = dims
        feat[node, 134 : 134 + len(layout)] = layout

    tensor(0, 13, [100, 8], [1, 0])  # f32
    tensor(1, 15, [3], [0])  # bf16
    tensor(2, 13, [100, 8, 2], [2, 0, 1])
    tensor(3, 6, [7], [0])  # s32
    graph = LayoutGraph(
        graph_id="g",
        node_feat=feat,
        node_opcode=np.zeros(4, np.uint8),
        edge_index=np.array([[2, 1], [3, 2], [2, 0]]),  # rows not in id order
        node_config_ids=np.array([2, 3]),
        node_config_feat=None,
        config_runtime=np.ones(1, np.int64),
    )
    t = layout_tensors(graph)
    assert t.shape == (2, 3, 13) and t.dtype == np.int32
    none = [-1] * 6
    assert t[0].tolist() == [
        [100, 8, 2, 0, 0, 0, 2, 0, 1, -1, -1, -1, 4],  # the node itself
        [100, 8, 0, 0, 0, 0, 1, 0, -1, -1, -1, -1, 4],  # node 0, the lowest operand id
        [3, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, 2],  # node 1
    ]
    assert t[1].tolist() == [
        [7, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, 4],
        [100, 8, 2, 0, 0, 0, 2, 0, 1, -1, -1, -1, 4],
        [0] * 6 + none + [0],  # no second operand
    ]


@pytest.mark.skipif(not REAL_DATA.exists(), reason=f"real TpuGraphs sample files not found at {REAL_DATA}")
@pytest.mark.parametrize(
    "path",
    [
        "nlp/random/test/23559853d9702baaaacbb0c83fd32266.npz",
        "xla/default/test/cd708819d3f5103afd6460b15e74eaf3.npz",
        "xla/default/train/unet3d.npz",
        "xla/random/train/openai_v0_rnn_optimized.npz",
    ],
)
def test_layout_tensors_and_cost_terms_of_real_files(path):
    """On real files: own layouts are permutations of the rank's dims, byte sizes are real types,
    and the cost terms of every config are finite, with padding ratios >= 1 and some configs moving
    tensors away from their own layouts."""
    from tpuperf.models.layers import layout_cost_terms, own_padded_bytes

    rel = Path(path)
    col = get_collection(f"layout:{rel.parts[0]}:{rel.parts[1]}")
    graph = load_graph(REAL_DATA / "npz" / "layout" / rel, col, rel.parts[2])
    t = layout_tensors(graph)
    assert t.shape == (len(graph.node_config_ids), 3, 13)
    dims, own, item = t[..., :6], t[..., 6:12], t[..., 12]
    rank = (dims > 0).sum(-1)
    for d, o, r in zip(dims.reshape(-1, 6), own.reshape(-1, 6), rank.reshape(-1)):
        assert (d[:r] > 0).all() and not d[r:].any()
        assert sorted(o[:r].tolist()) == list(range(r)) and (o[r:] == -1).all()
    assert set(np.unique(item).tolist()) <= {0, 1, 2, 4}
    assert (item[:, 0] > 0).all()  # every configurable node's output is an array
    config = graph.node_config_feat.astype(np.int8).transpose(1, 0, 2)  # [nc, c, 18], as batches carry it
    graph_bytes = np.full(len(t), float(own_padded_bytes(t).numpy().mean()), np.float32)
    terms = layout_cost_terms(config, t, graph_bytes).numpy()  # [nc, c, 3, 8]
    assert np.isfinite(terms).all()
    assert (terms[..., 0] >= 0).all() and (terms[..., 4] >= 0).all() and terms[..., 4].max() == 1
    assert terms[..., 0].max() > 0  # some config pads more than none
    unset = config[:, :, 0] == -1  # [nc, c]: an output group left to the compiler keeps the own layout
    assert (terms[..., 0, 4][unset] == 0).all()
    print(path, "moved fraction", terms[..., 4].mean().round(3), "log pad max", terms[..., 0].max().round(2))


def test_cli_reads_params(tmp_path):
    make_tile_dataset(tmp_path / "raw")
    params = params_with(
        {
            "data": {"out": str(tmp_path / "raw")},
            "preprocess": {
                "out": str(tmp_path / "cache"),
                "prune": "khop",
                "hops": 2,
                "jobs": 1,
                "on_bad_file": "fail",
                "log1p_above": 1e9,
                "std_floor": 1e-6,
                "chunk_mb": 8,
            },
        }
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert cli_main(["preprocess", "--collection", "tile-xla", "--params", str(tmp_path / "params.yaml")]) == 0
    assert CollectionCache(tmp_path / "cache", "tile:xla").stats["node_feat"]["log_columns"] == []


@pytest.mark.skipif(
    importlib.util.find_spec("tpuperf.data.synthetic") is None, reason="tpuperf.data.synthetic not available yet"
)
def test_synthetic_tiny_end_to_end(tmp_path):
    from tpuperf.data.synthetic import write_dataset

    write_dataset(tmp_path / "raw", preset="tiny", seed=0)
    for col in (TILE, LAYOUT):
        report = preprocess_collection(tmp_path / "raw", tmp_path / "cache", col, settings(hops=2), progress=False)
        cc = CollectionCache(tmp_path / "cache", col)
        assert len(cc.index) == sum(v["graphs"] for v in report["splits"].values()) > 0
        for g in cc.graphs("valid"):
            assert g.num_nodes <= cc.stats["max_nodes"] and g.node_feat.shape[1] == cc.node_feat_dim
            assert np.isfinite(g.node_feat).all() and g.num_configs == len(g.config_ids)


def _dvc(cwd: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_second_dvc_repro_does_no_work(tmp_path):
    """Runs the real dvc.yaml stage twice in a scratch DVC project (~8 s)."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["preprocess"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"preprocess": stage}}))
    params = params_with({"preprocess": {"jobs": 1}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    raw = tmp_path / params["data"]["out"]
    make_layout_dataset(raw)
    make_tile_dataset(raw)
    for col in ("layout:xla:random", "layout:xla:default", "layout:nlp:default"):
        shutil.copytree(LAYOUT.split_dir(raw, "train").parent, get_collection(col).split_dir(raw, "train").parent)
    _dvc(tmp_path, "init", "--no-scm")
    first = _dvc(tmp_path, "repro", "preprocess")
    assert first.count("Running stage") == 5
    stamp = (tmp_path / "cache" / LAYOUT.slug / "stats.json").stat().st_mtime_ns
    second = _dvc(tmp_path, "repro", "preprocess")
    assert "Running stage" not in second and second.count("didn't change, skipping") == 5
    assert (tmp_path / "cache" / LAYOUT.slug / "stats.json").stat().st_mtime_ns == stamp


REAL_COLLECTIONS = sorted(
    {locate(p)[0].name for p in REAL_DATA.glob("npz/**/*.npz")} if REAL_DATA.is_dir() else {"tile:xla"}
)


@pytest.mark.parametrize("name", REAL_COLLECTIONS)
def test_the_cache_holds_each_real_files_own_arrays(name, tmp_path):
    """Every real file of a collection, preprocessed in its own split (a train file also as a valid
    graph: dedup there, every config here), checked against its raw arrays with numpy: kept nodes
    and their rows, induced edges in file order, configurable node positions, config rows and ids,
    runtimes (tile: runtime / normaliser; train: the minimum over identical configs, the first
    one's id). Configs stream in 1 MB chunks, so dedup runs across chunks (unet3d: 5 chunks). A
    synthetic train graph fits the transform where the collection has no real train file."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"{REAL_DATA} absent (real TpuGraphs sample files)")
    col = get_collection(name)
    placed = []  # (real file, split)
    for path in sorted(p for p in REAL_DATA.glob("npz/**/*.npz") if locate(p)[0] == col):
        split = locate(path)[1]
        placed += [(path, split)] + ([(path, "valid")] if split == "train" else [])
    for path, split in placed:
        folder = col.split_dir(tmp_path / "raw", split)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).symlink_to(path)
    if not any(split == "train" for _, split in placed):
        _write_graph(tmp_path / "raw", name, "train", name="synthetic_train")
    preprocess_collection(tmp_path / "raw", tmp_path / "cache", col, settings(), progress=False)
    cache = CollectionCache(tmp_path / "cache", col)
    for path, split in placed:
        with np.load(path) as npz:
            raw = {k: npz[k] for k in npz.files}
        c = len(raw["config_runtime"])
        target = raw["config_runtime"] / raw.get("config_runtime_normalizers", 1)
        configs = raw["node_config_feat"] if col.kind.config_per_node else raw["config_feat"]
        g = cache.load(split, path.stem)
        kept = np.asarray(g.node_ids)
        assert (np.diff(kept) > 0).all() and np.array_equal(g.node_opcode, raw["node_opcode"][kept])
        np.testing.assert_allclose(
            g.node_feat,
            apply_transform(raw["node_feat"][kept], cache.stats["node_feat"], path, "node_feat"),
            rtol=1e-6,
            atol=1e-6,
        )
        both_kept = np.isin(raw["edge_index"], kept).all(axis=1)
        assert np.array_equal(kept[np.asarray(g.edge_index)], raw["edge_index"][both_kept])
        ids = np.asarray(g.config_ids)
        if split == "train":  # one config per distinct row: the first occurrence's id, the fastest runtime
            _, first, group = np.unique(configs.reshape(c, -1), axis=0, return_index=True, return_inverse=True)
            assert np.array_equal(ids, np.sort(first))
            fastest = np.full(len(first), np.inf)
            np.minimum.at(fastest, group.ravel(), target)
            assert np.array_equal(g.runtime, fastest[group.ravel()[ids]])
        else:
            assert np.array_equal(ids, np.arange(c)) and np.array_equal(g.runtime, target)
        if col.kind.config_per_node:
            assert np.array_equal(kept[np.asarray(g.config_node_pos)], raw["node_config_ids"])
            assert np.array_equal(np.asarray(g.config_feat), raw["node_config_feat"][ids].astype(np.int8))
        else:
            tiles = with_tile_features(raw["node_feat"], raw["node_opcode"], raw["edge_index"], configs[ids])
            np.testing.assert_allclose(
                g.config_feat,
                apply_transform(tiles, cache.stats["config_feat"], path, "config_feat"),
                rtol=1e-6,
                atol=1e-6,
            )
