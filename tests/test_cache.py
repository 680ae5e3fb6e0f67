"""The cache reader against a cache written by hand from the documented on-disk format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import config_with

from tpuperf.collection import get_collection
from tpuperf.config import PRUNE_MODES
from tpuperf.data.cache import (
    FORMAT_VERSION,
    PREPROCESS_KEYS,
    CacheError,
    CollectionCache,
    graph_dir,
    preprocess_differences,
)

LAYOUT = get_collection("layout:xla:random")
TILE = get_collection("tile:xla")


def write_graph(root: Path, split: str, gid: str, n: int, c: int, layout: bool) -> dict:
    d = root / graph_dir(split, gid)
    d.mkdir(parents=True)
    arrays = {
        "node_feat": np.arange(n * 3, dtype=np.float32).reshape(n, 3),
        "node_opcode": np.arange(n, dtype=np.int32),
        "edge_index": np.array([[i + 1, i] for i in range(n - 1)], dtype=np.int32).reshape(-1, 2),
        "node_ids": np.arange(n, dtype=np.int64) * 2,
        "config_feat": (np.zeros((c, 2, 18), np.int8) + np.arange(c, dtype=np.int8)[:, None, None])
        if layout
        else np.ones((c, 30), np.float32),
        "runtime": np.linspace(1, 2, c),
        "config_ids": np.arange(c, dtype=np.int64) * 3,
    }
    if layout:
        arrays["config_node_pos"] = np.array([0, n - 1], dtype=np.int32)
        arrays["config_edges"] = np.array([[1, 0]], dtype=np.int32)  # the chain links its two ends
        arrays["config_tensors"] = np.zeros((2, 3, 13), np.int32)
    else:
        arrays["config_first"] = np.zeros(c, np.int64)  # one configuration c times
    for name, arr in arrays.items():
        np.save(d / f"{name}.npy", arr)
    return {
        "split": split,
        "graph_id": gid,
        "num_nodes": n,
        "num_edges": n - 1,
        "num_configs": c,
        "num_configs_original": c,
        "num_config_nodes": 2 if layout else 0,
        "num_config_edges": 1 if layout else 0,
        "path": graph_dir(split, gid),
        "content_hash": f"{split}-{gid}-hash",
    }


def write_cache(root: Path, collection, layout: bool) -> Path:
    d = root / collection.slug
    rows = [
        write_graph(d, "train", "b", 4, 5, layout),
        write_graph(d, "train", "a", 3, 2, layout),
        write_graph(d, "test", "t", 2, 7, layout),
    ]
    pl.DataFrame(rows).write_parquet(d / "index.parquet")
    shape = [2, 18] if layout else [30]
    (d / "stats.json").write_text(
        json.dumps({"format_version": FORMAT_VERSION, "node_feat_dim": 3, "config_feat_shape": shape})
    )
    return d


def test_reader_loads_graphs_with_memmapped_configs(tmp_path):
    write_cache(tmp_path, LAYOUT, layout=True)
    cc = CollectionCache(tmp_path, "layout-xla-random")
    assert cc.graph_ids("train") == ["b", "a"] and cc.graph_ids("valid") == []
    assert cc.node_feat_dim == 3 and cc.config_feat_shape == (2, 18)
    g = cc.load("train", "b")
    assert (g.graph_id, g.split, g.num_nodes, g.num_edges, g.num_configs) == ("b", "train", 4, 3, 5)
    assert isinstance(g.config_feat, np.memmap) and isinstance(g.runtime, np.memmap)
    assert not isinstance(g.node_feat, np.memmap)
    assert g.config_feat[3, 1, 17] == 3 and g.config_ids.tolist() == [0, 3, 6, 9, 12]
    assert g.config_node_pos.tolist() == [0, 3] and g.config_edges.tolist() == [[1, 0]]
    assert g.config_tensors.shape == (2, 3, 13)
    assert [x.graph_id for x in cc.graphs("test")] == ["t"]
    assert cc.content_hashes("train") == {"b": "train-b-hash", "a": "train-a-hash"}
    assert cc.content_hashes("valid") == {}


def test_tile_graphs_have_no_config_node_pos(tmp_path):
    write_cache(tmp_path, TILE, layout=False)
    g = CollectionCache(tmp_path, TILE).load("test", "t")
    assert g.config_node_pos is None and g.config_edges is None and g.config_tensors is None
    assert g.config_feat.shape == (7, 30)
    assert (
        g.config_first.tolist() == [0] * 7
        and CollectionCache(tmp_path, TILE).config_first("test")["t"].tolist() == [0] * 7
    )


def test_missing_cache_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(CacheError, match=r"layout-xla-random/stats.json missing: run `dvc repro preprocess`"):
        CollectionCache(tmp_path, LAYOUT)
    d = write_cache(tmp_path, LAYOUT, layout=True)
    (d / "index.parquet").unlink()
    with pytest.raises(CacheError, match=r"layout-xla-random/index.parquet missing"):
        CollectionCache(tmp_path, LAYOUT)


def test_incomplete_graph_and_unknown_graph(tmp_path):
    d = write_cache(tmp_path, LAYOUT, layout=True)
    (d / "train" / "a" / "runtime.npy").unlink()
    cc = CollectionCache(tmp_path, LAYOUT)
    with pytest.raises(CacheError, match=r"train/a/runtime.npy missing"):
        cc.load("train", "a")
    with pytest.raises(KeyError, match="no graph 'zz' in split 'valid'"):
        cc.load("valid", "zz")


def test_other_format_version_is_refused(tmp_path):
    d = write_cache(tmp_path, LAYOUT, layout=True)
    (d / "stats.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(CacheError, match="format version"):
        CollectionCache(tmp_path, LAYOUT)


@pytest.mark.parametrize("old", [1, 2, 3, 4, 5])
def test_older_caches_are_refused_with_the_fix(tmp_path, old):
    """Format 1 has no content_hash (a checkpoint could resume on stale data), 2 no config_edges,
    3 no config_tensors, 4 no tile features in tile config_feat, 5 no tile config_first."""
    assert FORMAT_VERSION == 6
    d = write_cache(tmp_path, LAYOUT, layout=True)
    (d / "stats.json").write_text(json.dumps({"format_version": old}))
    with pytest.raises(
        CacheError, match=rf"stats.json: format version {old}, reader expects 6: run `dvc repro preprocess`"
    ):
        CollectionCache(tmp_path, LAYOUT)


def test_preprocess_differences_of_settings_and_stats_json():
    """One comparison serves the cache check (stats.json against params.yaml) and the kernels' overrides check (two
    PreprocessConfigs): values as JSON reads them back, so a stats.json integer equals a float setting and a list
    its tuple; only PREPROCESS_KEYS count, a key stats.json lacks is None."""
    settings = config_with({}).preprocess
    stats = json.loads(json.dumps({k: getattr(settings, k) for k in PREPROCESS_KEYS} | {"jobs": 99, "max_nodes": 7}))
    stats["log1p_above"] = int(settings.log1p_above)  # 100 in stats.json, 100.0 in params.yaml
    assert preprocess_differences(stats, settings) == []
    assert preprocess_differences({"prune": ("khop", 1)}, {"prune": ["khop", 1]}) == []  # a tuple equals its list
    prune = next(mode for mode in PRUNE_MODES if mode != settings.prune)
    other = config_with({"preprocess": {"hops": settings.hops + 2, "prune": prune, "jobs": 1}}).preprocess
    assert preprocess_differences(settings, other) == [
        ("prune", settings.prune, prune),
        ("hops", settings.hops, settings.hops + 2),
    ]
    del stats["std_floor"]
    assert preprocess_differences(stats, settings) == [("std_floor", None, settings.std_floor)]
