"""How far do per-config tile features get without a GNN? (issue #14, tile:xla)

Fits a ridge regression of per-graph centred log runtime (runtime / normaliser) on per-graph
centred features over the train split and scores the valid split with the tile metric (mean
2 - min(top-5) / min, the top 5 ranked as the submission ranks it: distinct configurations first), for two
feature sets:

- ``config``: the 24 config_feat columns as log1p and their squares, as
  benchmarks/synthetic_learnability.py's config-only ridge (it cannot see the kernel);
- ``+tile``: those plus :func:`tpuperf.data.tile_features.tile_features` (tile count, padding
  waste and (8, 128) padding of the output and kernel tensors, computed from the file) and their
  squares.

Usage: python benchmarks/tile_feature_ceiling.py [--data data/raw] [--ridge 1.0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from synthetic_learnability import config_features, fit_ridge

from tpuperf.collection import get_collection
from tpuperf.data.npz import load_graph
from tpuperf.data.preprocess import first_identical
from tpuperf.data.tile_features import tile_features
from tpuperf.metrics import collection_score


def ridge_features(g) -> np.ndarray:
    extra = tile_features(g.node_feat, g.node_opcode, g.edge_index, g.config_feat).astype(np.float64)
    return np.concatenate([config_features(g), extra, extra**2], axis=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/raw")
    parser.add_argument("--ridge", type=float, default=1.0, help="ridge strength")
    args = parser.parse_args(argv)
    col = get_collection("tile:xla")
    graphs = {
        split: [load_graph(f, col, split) for f in sorted(col.split_dir(Path(args.data), split).glob("*.npz"))]
        for split in ("train", "valid")
    }
    truth = {str(i): g.target for i, g in enumerate(graphs["valid"])}
    same = {str(i): first_identical(g.config_feat) for i, g in enumerate(graphs["valid"])}  # top 5 as submitted
    row = [f"tile:xla ({len(graphs['train'])} train / {len(graphs['valid'])} valid graphs)"]
    for label, features in (("config", config_features), ("+tile", ridge_features)):
        coef, scale = fit_ridge(graphs["train"], args.ridge, features)
        pred = {str(i): features(g) / scale @ coef for i, g in enumerate(graphs["valid"])}
        row.append(f"{label} {collection_score(col, pred, truth, same):.3f}")
    print(", ".join(row))


if __name__ == "__main__":
    main()
