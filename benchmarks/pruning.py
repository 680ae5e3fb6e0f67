"""Layout graph pruning compared: k-hop (k = 1, 2, 3) against the elementwise chains (``preprocess.prune``).

For every pruning setting, every layout collection of a dataset is preprocessed with it, then
each model trains with the project's k-fold trainer (params.yaml's ``train`` section, one run
per seed); printed per collection: the kept-node fraction (nodes kept / nodes in the files,
all splits), valid Kendall tau (mean over folds, mean ± std over seeds) and the trainer's
training seconds (sum over folds, mean over seeds). ``--kept-only`` prints the kept-node
fractions alone (no training), e.g. for the real files.

    python benchmarks/pruning.py                              # synthetic small preset (seed 0), chebsage, seeds 0 1
    python benchmarks/pruning.py --models chebsage baseline --seeds 0 1 --json out.json
    python benchmarks/pruning.py --data ../shared/data --kept-only   # a downloaded dataset dir (npz/...)
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from tpuperf.collection import COLLECTIONS, SPLITS, Collection
from tpuperf.config import Config, deep_merge, load_params
from tpuperf.data.npz import load_graph
from tpuperf.data.preprocess import preprocess_collection, prune
from tpuperf.data.synthetic import write_dataset
from tpuperf.training.trainer import train_collection

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
LAYOUTS = [c for c in COLLECTIONS if c.kind.config_per_node]
SETTINGS = ("khop:1", "khop:2", "khop:3", "chains:0")


def config_for(work: Path, setting: str, model_seed: int) -> Config:
    """params.yaml with the benchmark's pruning, seed and scratch output dirs."""
    mode, hops = setting.split(":")
    return Config.from_dict(
        deep_merge(
            load_params(PARAMS),
            {
                "preprocess": {"out": str(work / f"cache-{mode}{hops}"), "prune": mode, "hops": int(hops), "jobs": 1},
                "train": {
                    "seed": model_seed,
                    "live": False,
                    "verbose": 0,
                    "runs_dir": str(work / "runs"),
                    "checkpoints_dir": str(work / "checkpoints"),
                },
            },
        )
    )


def kept_fraction(data: Path, collection: Collection, setting: str) -> float:
    """Nodes kept by ``setting`` / nodes in the files, over every split of ``collection`` under ``data``."""
    mode, hops = setting.split(":")
    kept = total = 0
    for split in SPLITS:
        folder = collection.split_dir(data, split)
        for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
            graph = load_graph(path, collection, split, load_configs=False)
            kept += len(prune(graph, mode, int(hops))[0])
            total += len(graph.node_feat)
    return kept / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a dataset dir holding npz/ (default: synthetic --preset)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), help="mode:hops, e.g. khop:1 chains:0")
    parser.add_argument("--models", nargs="+", default=["chebsage"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--kept-only", action="store_true", help="only preprocess and print kept-node fractions")
    parser.add_argument("--json", type=Path, help="also write the records here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    records = []
    with tempfile.TemporaryDirectory(prefix="pruning-") as tmp:
        work = Path(tmp)
        data = args.data
        if data is None:
            data = work / "data"
            write_dataset(data, args.preset, 0)
        present = [c for c in LAYOUTS if any(c.split_dir(data, split).is_dir() for split in SPLITS)]
        for setting in args.settings:
            for collection in present:
                kept = kept_fraction(data, collection, setting)
                record = {"setting": setting, "collection": collection.name, "kept": kept, "runs": []}
                records.append(record)
                print(f"{setting:9} {collection.name:18} kept {kept:.3f}", flush=True)
                if args.kept_only:
                    continue
                config = config_for(work, setting, 0)
                preprocess_collection(data, config.preprocess.out, collection, config.preprocess, progress=False)
                for model in args.models:
                    for seed in args.seeds:
                        start = time.perf_counter()
                        metrics = train_collection(collection, model, config_for(work, setting, seed))
                        run = {
                            "model": model,
                            "seed": seed,
                            "valid": metrics["valid_score_mean_fold"],
                            "train_seconds": sum(f["train_seconds"] for f in metrics["folds"]),
                            "stage_seconds": time.perf_counter() - start,
                        }
                        record["runs"].append(run)
                        print(f"    {model} seed {seed}: {json.dumps(run)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    print_table(records, args.models)


def print_table(records: list[dict], models: list[str]) -> None:
    """Markdown: per collection and setting, kept fraction, then valid tau and train s per model."""
    head = "| collection | pruning | kept nodes |" + "".join(f" {m} valid tau | {m} train s |" for m in models)
    print("\n" + head + "\n|" + "---|" * (3 + 2 * len(models)))
    for r in sorted(records, key=lambda r: (r["collection"], r["setting"])):
        cells = [r["collection"], r["setting"], f"{r['kept']:.3f}"]
        for m in models:
            runs = [x for x in r["runs"] if x["model"] == m]
            taus = [x["valid"] for x in runs]
            if not taus:
                cells += ["", ""]
                continue
            spread = f" ± {statistics.stdev(taus):.3f}" if len(taus) > 1 else ""
            cells += [
                f"{statistics.mean(taus):.3f}{spread}",
                f"{statistics.mean(x['train_seconds'] for x in runs):.1f}",
            ]
        print("| " + " | ".join(cells) + " |")
    means = {}
    for r in records:
        for x in r["runs"]:
            means.setdefault((r["setting"], x["model"]), []).append(x["valid"])
    for (setting, model), taus in sorted(means.items()):
        print(f"mean valid tau over collections and seeds: {setting:9} {model}: {statistics.mean(taus):.4f}")


if __name__ == "__main__":
    main()
