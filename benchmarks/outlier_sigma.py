"""How often would ``tpuperf rank`` warn of feature values far outside the training data, per ``export.outlier_sigma``?

``tpuperf rank`` counts a file's standardised feature values (node features of the pruned graph, tile config
features) further than ``outlier_sigma`` train standard deviations from the train mean, and warns when there are any
(:meth:`tpuperf.ranking.ranker.ExportedModel._outlying_values`). A default must stay quiet for programs like the
training data's and speak for others. A preprocessed cache holds every split transformed with the train
statistics, exactly as ``tpuperf rank`` transforms a file, so this reads each split's graphs from a fresh cache of
``DATA_DIR`` (a data.out: its valid and test files are drawn like its train files) and prints, per collection, split
and sigma, the share of files that would warn and the largest count of a file. With ``--other DIR`` it also
transforms the files under DIR (e.g. the real TpuGraphs files) with each collection's train statistics: programs
unlike the training data.

Usage: python benchmarks/outlier_sigma.py DATA_DIR [--other DIR] [--sigmas 5 10 20 50] [--collections ...]
(the cache is built in a temp dir with params.yaml's preprocess settings and one job; state the load with times).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from tpuperf.collection import COLLECTIONS, SPLITS, get_collection, locate
from tpuperf.config import load_config
from tpuperf.data.cache import CollectionCache
from tpuperf.data.npz import find_npz
from tpuperf.data.preprocess import prepare_graph, preprocess_collection
from tpuperf.ranking.ranker import outlying_masks


def far_values(graph, sigma: float, config_per_node: bool) -> int:
    """Standardised feature values of one transformed graph beyond ``sigma``, as ``tpuperf rank`` counts them."""
    return sum(int(m.sum()) for m in outlying_masks(graph, sigma, config_per_node).values())


def summary(counts: list[list[int]], sigmas: list[float]) -> dict[str, dict[str, float]]:
    """Per sigma: the share of files with any far value and the largest count of one file."""
    array = np.asarray(counts).reshape(len(counts), len(sigmas))
    return {
        f"{s:g}": {"files_warned": round(float((array[:, i] > 0).mean()), 3), "max_count": int(array[:, i].max())}
        for i, s in enumerate(sigmas)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a dataset in the real layout (npz/...)")
    parser.add_argument("--other", type=Path, help="files in the real layout to transform with DATA_DIR's train stats")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[5.0, 10.0, 20.0, 50.0])
    parser.add_argument("--collections", nargs="+", default=[c.name for c in COLLECTIONS])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    settings = replace(load_config(args.params).preprocess, jobs=1)
    other = find_npz([args.other]) if args.other else []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.collections:
            collection = get_collection(name)
            started = time.perf_counter()
            preprocess_collection(args.data, tmp, collection, settings, progress=False)
            cache = CollectionCache(tmp, collection)
            layout = collection.kind.config_per_node
            row = {"collection": collection.name, "preprocess_s": round(time.perf_counter() - started, 1)}
            for split in SPLITS:
                counts = [[far_values(g, s, layout) for s in args.sigmas] for g in cache.graphs(split)]
                if counts:
                    row[split] = {"files": len(counts), **summary(counts, args.sigmas)}
            mine = [f for f in other if locate(f)[0] == collection]
            if mine:
                counts = [
                    [far_values(prepare_graph(f, collection, cache.stats), s, layout) for s in args.sigmas]
                    for f in mine
                ]
                row["other"] = {"files": len(counts), **summary(counts, args.sigmas)}
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
