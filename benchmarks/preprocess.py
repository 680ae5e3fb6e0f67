"""Memory and speed of the preprocess stage (prints figures; not a timed test).

1. One real-scale layout:nlp train graph (default ~20k nodes, 600 configurable nodes, 24k
   configs: node_config_feat is 0.97 GiB as float32) preprocessed in a child process with
   jobs=1: peak RSS (the child's ru_maxrss) against the 4 GiB target, and wall time.
2. Throughput in graphs/s over all five collections of the synthetic ``small`` preset, with
   jobs=1 and jobs=2.

    python benchmarks/preprocess.py [--nodes 20500 --config-nodes 600 --configs 24000]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from tpuperf.collection import COLLECTIONS, get_collection
from tpuperf.config import PreprocessConfig, load_config
from tpuperf.data.npz import read_header
from tpuperf.data.preprocess import preprocess_collection

GIB = 1 << 30
RSS_TARGET = 4 * GIB
NLP = get_collection("layout:nlp:random")
OWN_WRITER = "the benchmark's own streaming"
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
CHILD = """
import dataclasses, sys
from tpuperf.collection import get_collection
from tpuperf.config import load_config
from tpuperf.data.preprocess import preprocess_collection
settings = dataclasses.replace(load_config(sys.argv[4]).preprocess, hops=int(sys.argv[3]), jobs=1)
preprocess_collection(sys.argv[1], sys.argv[2], get_collection("layout:nlp:random"), settings, progress=False)
"""


def settings(hops: int, jobs: int) -> PreprocessConfig:
    """params.yaml's preprocess section with the benchmark's ``hops`` and ``jobs``."""
    return dataclasses.replace(load_config(PARAMS).preprocess, hops=hops, jobs=jobs)


def _write_member(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array(fh, arr)


def write_big_layout_graph(
    path: Path, nodes: int, config_nodes: int, configs: int, dup_fraction: float, seed: int
) -> None:
    """A TpuGraphs-format layout file written with bounded memory: ``node_config_feat`` is
    streamed into the zip member 1,000 configs at a time, never held whole.

    About ``dup_fraction`` of the configs repeat an earlier one, so dedup has work to do.
    """
    rng = np.random.default_rng(seed)
    # DAG in topological order: each node consumes one or two recent earlier nodes
    consumer = np.repeat(np.arange(1, nodes), 2)
    producer = np.maximum(consumer - rng.integers(1, 50, len(consumer)), 0)
    edges = np.unique(np.stack([consumer, producer], axis=1)[rng.random(len(consumer)) < 0.75], axis=0)
    node_feat = np.zeros((nodes, 140), dtype=np.float32)
    node_feat[:, :30] = rng.integers(0, 4, (nodes, 30))
    node_feat[:, 21:29] = rng.integers(1, 1 << 20, (nodes, 8))
    config_ids = np.sort(rng.choice(nodes, config_nodes, replace=False))
    rank = rng.integers(1, 5, config_nodes)  # tensor rank of each configurable node
    beyond = np.arange(6)[None, :] >= rank[:, None]  # (config_nodes, 6): dims past the rank
    chunk = 1000
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        _write_member(zf, "node_feat", node_feat)
        _write_member(zf, "node_opcode", rng.integers(0, 120, nodes).astype(np.uint8))
        _write_member(zf, "edge_index", edges.astype(np.int64))
        _write_member(zf, "node_config_ids", config_ids.astype(np.int64))
        _write_member(zf, "config_runtime", rng.integers(10**6, 10**8, configs).astype(np.int64))
        _write_member(zf, "node_splits", np.array([[0, nodes // 2]], dtype=np.int64))
        header = {"descr": "<f4", "fortran_order": False, "shape": (configs, config_nodes, 18)}
        previous = None
        with zf.open("node_config_feat.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            for start in range(0, configs, chunk):
                c = min(chunk, configs - start)
                block = np.empty((c, config_nodes, 18), dtype=np.float32)
                for group in range(3):  # output, input, kernel tensors: a random order of 0..rank-1, then -1
                    keys = rng.random((c, config_nodes, 6))
                    keys[:, beyond] = np.inf
                    order = np.argsort(keys, axis=2).astype(np.float32)
                    order[:, beyond] = -1
                    block[:, :, group * 6 : group * 6 + 6] = order
                if previous is not None:
                    dup = rng.random(c) < dup_fraction
                    block[dup] = previous[rng.integers(0, len(previous), int(dup.sum()))]
                previous = block
                fh.write(block.tobytes())


def write_big_graph(path: Path, args: argparse.Namespace) -> None:
    """The real-scale graph, from tpuperf.data.synthetic's single-graph writer when it exists
    (its hidden cost model gives realistic runtimes), else from the streaming writer above."""
    if _generator() == OWN_WRITER:
        write_big_layout_graph(path, args.nodes, args.config_nodes, args.configs, args.dup_fraction, seed=0)
        return
    from tpuperf.data.synthetic import make_layout_graph, write_graph

    rng = np.random.default_rng(0)
    write_graph(
        path, make_layout_graph(rng, args.nodes, args.config_nodes, args.configs, source="nlp", search="random")
    )


def _generator() -> str:
    synthetic = importlib.util.find_spec("tpuperf.data.synthetic")
    return "tpuperf.data.synthetic.make_layout_graph" if synthetic is not None else OWN_WRITER


def _run_measured(cmd: list[str]) -> tuple[float, int]:
    """Wall time and peak RSS in bytes of one child process (its own rusage, via wait4).

    The child's ru_maxrss also counts this process's RSS at spawn (Linux carries the parent's
    high-water mark across exec), so this process stays small: the graph is written by
    another child beforehand.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return time.perf_counter() - t0, usage.ru_maxrss * 1024  # Linux reports KiB


def measure_big(work: Path, args: argparse.Namespace) -> None:
    raw = work / "big"
    path = NLP.split_dir(raw, "train") / "big.npz"
    path.parent.mkdir(parents=True)
    t0 = time.perf_counter()
    writer = multiprocessing.get_context("spawn").Process(target=write_big_graph, args=(path, args))
    writer.start()
    writer.join()
    if writer.exitcode:
        raise RuntimeError(f"writing {path} failed (exit code {writer.exitcode})")
    h = read_header(path)
    c, nc, _ = h["node_config_feat"].shape
    print(
        f"[1] wrote {path.name} with {_generator()} writer in {time.perf_counter() - t0:.0f} s: {h['node_feat'].shape[0]} nodes, "
        f"{nc} configurable, {c} configs; node_config_feat {c * nc * 18 * 4 / GIB:.2f} GiB as float32, "
        f"file {path.stat().st_size / 2**20:.0f} MiB"
    )
    wall, peak = _run_measured(
        [sys.executable, "-c", CHILD, str(raw), str(work / "cache"), str(args.hops), str(PARAMS)]
    )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = json.loads((work / "cache" / NLP.slug / "report.json").read_text())["splits"]["train"]
    verdict = "OK" if peak <= RSS_TARGET else "OVER TARGET"
    print(
        f"[1] preprocess (jobs=1, hops={args.hops}, child process): wall {wall:.1f} s, peak RSS {peak / 2**20:.0f} MiB "
        f"(target <= {RSS_TARGET / 2**20:.0f} MiB: {verdict}; upper bound, includes up to {own:.0f} MiB of the parent)"
    )
    print(
        f"    configs {report['configs_original']} -> {report['configs_kept']} after dedup, "
        f"nodes {report['nodes_original']} -> {report['nodes_kept']}, edges {report['edges_original']} -> {report['edges_kept']}"
    )


def measure_throughput(work: Path, preset: str, hops: int) -> None:
    from tpuperf.data.synthetic import write_dataset

    raw = work / preset
    write_dataset(raw, preset=preset, seed=0)
    for jobs in (1, 2):
        graphs, t0 = 0, time.perf_counter()
        for col in COLLECTIONS:
            report = preprocess_collection(raw, work / f"cache{jobs}", col, settings(hops, jobs), progress=False)
            graphs += sum(s["graphs"] for s in report["splits"].values())
        wall = time.perf_counter() - t0
        print(
            f"[2] '{preset}' preset, jobs={jobs}: {graphs} graphs (5 collections) in {wall:.1f} s = {graphs / wall:.1f} graphs/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=20_500)
    parser.add_argument("--config-nodes", type=int, default=600)
    parser.add_argument("--configs", type=int, default=24_000)
    parser.add_argument("--dup-fraction", type=float, default=0.2, help="repeated configs (own writer only)")
    parser.add_argument("--hops", type=int, default=2)
    parser.add_argument("--preset", default="small", help="synthetic preset for the throughput figure")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch dir (default: a temp dir, removed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        measure_big(Path(tmp), args)
        measure_throughput(Path(tmp), args.preset, args.hops)


if __name__ == "__main__":
    main()
