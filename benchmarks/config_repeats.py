"""How many configurations repeat an earlier one of their file (identical features)?

Tile: identical ``config_feat`` rows; layout: identical ``node_config_feat`` over all configurable nodes (the
whole (nc, 18) block of a config). A repeat scores as its first copy, so a top K that ranks both spends a slot on
a configuration it already holds: ``tpuperf.metrics.rank_configs`` with the labels of identical configurations
ranks every distinct one before any repeat, in the tile submission and training's tile scores (the cache's
``config_first``) and in ``tpuperf rank --top K`` (tile and layout). A layout submission ranks every config, so
Kendall tau is unaffected. Only files with repeats can change a top K, and only upwards.

Prints one JSON line per collection and split under ``<data>/npz``: files, configs, repeated configs, files with
repeats, files with fewer than 5 distinct configurations, the largest file share of repeats; with ``--per-file``
first one line per file: configs, distinct configurations, the most copies of one, and the milliseconds the
labels took (:func:`tpuperf.data.preprocess.first_identical`, what ``tpuperf rank --top K`` computes per layout
file; state the load with them). Files are read whole (a real layout:nlp train file can take GBs).

Usage: python benchmarks/config_repeats.py DATA_DIR [DATA_DIR ...] [--per-file]   (a data.out: real or synthetic)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from tpuperf.collection import COLLECTIONS, SPLITS, Collection
from tpuperf.data.preprocess import first_identical
from tpuperf.metrics import TILE_TOP_K as TOP_K  # the tile submission's top K, `tpuperf rank`'s default for tile


def file_repeats(path: Path, collection: Collection) -> dict:
    """Configs, distinct configurations, the most copies of one and the labels' milliseconds of one file."""
    with np.load(path) as z:
        feat = z["node_config_feat" if collection.kind.config_per_node else "config_feat"]
    started = time.perf_counter()
    first = first_identical(feat)
    ms = (time.perf_counter() - started) * 1000
    return {
        "configs": len(first),
        "distinct": len(np.unique(first)),
        "most_copies": int(np.bincount(first).max()),
        "labels_ms": round(ms, 2),
    }


def split_repeats(split_dir: Path, collection: Collection, per_file: bool = False) -> dict:
    """Repeat counts of the files in one split directory; ``per_file`` prints each file's line first."""
    files = configs = repeated = with_repeats = few = 0
    worst = 0.0
    for path in sorted(split_dir.glob("*.npz")):
        counts = file_repeats(path, collection)
        if per_file:
            print(json.dumps({"file": str(path), "collection": collection.name, **counts}))
        files, configs = files + 1, configs + counts["configs"]
        repeated += counts["configs"] - counts["distinct"]
        with_repeats += counts["distinct"] < counts["configs"]
        few += counts["distinct"] < TOP_K
        worst = max(worst, 1 - counts["distinct"] / counts["configs"])
    return {
        "files": files,
        "configs": configs,
        "repeated_configs": repeated,
        "files_with_repeats": with_repeats,
        f"files_with_fewer_than_{TOP_K}_distinct": few,
        "largest_repeat_share": round(worst, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path, help="data.out directories")
    parser.add_argument("--per-file", action="store_true", help="also one line per file, before its split's")
    args = parser.parse_args(argv)
    for data in args.data:
        for collection in COLLECTIONS:
            for split in SPLITS:
                split_dir = collection.split_dir(data, split)
                if split_dir.is_dir():
                    counts = split_repeats(split_dir, collection, args.per_file)
                    print(json.dumps({"data": str(data), "collection": collection.name, "split": split, **counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
