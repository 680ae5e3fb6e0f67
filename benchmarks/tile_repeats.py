"""How many tile configurations repeat an earlier one of their file (identical ``config_feat`` rows)?

A repeat scores as its first copy, so a top 5 that ranks both spends a slot on a configuration it
already holds; ``tpuperf.metrics.rank_configs`` with the cache's ``config_first`` ranks every distinct
configuration before any repeat (submission and ``tpuperf rank``). Only files with repeats can change
score, and only upwards (a 6th distinct configuration enters the top 5 instead of a copy). Prints one
JSON line per split under ``<data>/npz/tile/xla``: files, configs, repeated configs, files with
repeats, files with fewer than 5 distinct configurations, and the largest file share of repeats.

Usage: python benchmarks/tile_repeats.py DATA_DIR [DATA_DIR ...]   (a data.out: the real or a synthetic one)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tpuperf.collection import SPLITS, get_collection
from tpuperf.data.preprocess import first_identical
from tpuperf.metrics import TILE_TOP_K

TILE = get_collection("tile:xla")


def split_repeats(split_dir: Path) -> dict:
    """Repeat counts of the tile files in one split directory."""
    files = configs = repeated = with_repeats = few = 0
    worst = 0.0
    for path in sorted(split_dir.glob("*.npz")):
        with np.load(path) as z:
            first = first_identical(z["config_feat"])
        distinct = len(np.unique(first))
        files, configs = files + 1, configs + len(first)
        repeated += len(first) - distinct
        with_repeats += distinct < len(first)
        few += distinct < TILE_TOP_K
        worst = max(worst, 1 - distinct / len(first))
    return {
        "files": files,
        "configs": configs,
        "repeated_configs": repeated,
        "files_with_repeats": with_repeats,
        f"files_with_fewer_than_{TILE_TOP_K}_distinct": few,
        "largest_repeat_share": round(worst, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path, help="data.out directories")
    args = parser.parse_args(argv)
    for data in args.data:
        for split in SPLITS:
            split_dir = TILE.split_dir(data, split)
            if split_dir.is_dir():
                print(json.dumps({"data": str(data), "split": split, **split_repeats(split_dir)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
