"""How far do hand-computed per-config layout features get, without a GNN? (issue #14 diagnosis)

For every layout config of the raw synthetic files, sums over the configurable nodes what the
cost model's formula (:mod:`tpuperf.data.synthetic`) charges each node's chosen layouts, read
from the node's and its operands' dims only (the information the node features hold):

- ``pad``: bytes x (8, 128) padding of the output, input and kernel tensors under the chosen
  layouts (3 features), and flops x [contracting dim not minor], flops x [kernel feature dim
  not among the 2 minor-most] (2);
- ``+copy``: bytes x padding of a transpose where the chosen input / kernel layout differs from
  the operand's default layout (2; ignores layouts propagated to the operand);
- ``+chains``: the output padding charged again on the elementwise chain below the node that
  inherits its layout (1), which needs the graph's wiring.

A ridge regression of per-graph mean-normalised runtime on the mean-normalised features is fit on
the train split and scored (mean Kendall tau) on valid, beside the noise-free oracle and the
config-only ridge of benchmarks/synthetic_learnability.py. The gap between a feature set and the
trained GNNs is what the GNN fails to extract from its inputs.

The files list edge rows sorted by id, while the cost model reads operand order (a binary op's
first operand passes its layout on): the graphs are rebuilt from the preset and seed the files were
generated with (``--preset``/``--seed``, by default the ``origin`` that the download stage recorded
in ``<data>/manifest.json``) with :func:`tpuperf.data.synthetic.operand_edge_index`.

Usage: python benchmarks/layout_feature_ceiling.py [--data data/raw] [--collections layout:xla:random ...]
       [--preset small --seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tpuperf.collection import get_collection
from tpuperf.data import synthetic as syn
from tpuperf.data.download import MANIFEST_NAME
from tpuperf.data.npz import load_graph
from tpuperf.metrics import collection_score

FEATURE_SETS = {"pad": 5, "+copy": 7, "+chains": 8}


def layout_features(g, operand_edges: np.ndarray) -> np.ndarray:
    """(configs, 8) float64 per-config sums (ns-like units) of the per-node terms above;
    ``operand_edges`` (m, 2): g's edge rows in operand order (``syn.operand_edge_index``)."""
    p = syn._parse(g.node_feat, g.node_opcode, operand_edges)
    ids = np.asarray(g.node_config_ids)
    energy, variables = syn._layout_energy(p, ids)
    values = syn._decode_configs(g.node_config_feat, variables)  # (3 m, c) perm indices
    slot = {int(v): j for j, v in enumerate(ids)}
    chain_bytes = np.zeros(len(ids))  # elementwise traffic inheriting each configurable node's output layout
    owner: list[int] = []
    for v in range(len(p.shapes)):
        ops = p.operands[v]
        if v in slot:
            owner.append(slot[v])
        elif int(p.opcode[v]) in syn.ELEMENTWISE and ops:
            owner.append(owner[ops[0]])
            if owner[v] >= 0 and p.shapes[v] == p.shapes[ids[owner[v]]]:
                chain_bytes[owner[v]] += (1 + len(ops)) * p.nbytes[v]
        else:
            owner.append(-1)
    out = np.zeros((g.node_config_feat.shape[0], 8))
    for j, v in enumerate(ids.tolist()):
        ops = p.operands[v]
        tensors = (v, ops[0] if ops else None, ops[1] if len(ops) > 1 else None)
        for group, t in enumerate(tensors):
            if t is None or not p.shapes[t]:
                continue
            pad = syn._pad_factors(p.shapes[t])[values[3 * j + group]]
            out[:, group] += p.nbytes[t] * pad / syn.HBM_BYTES_PER_NS
            if group:
                moved = values[3 * j + group] != syn._perm_index(p.layouts[t])
                base = p.nbytes[t] * (pad + syn._pad_factors(p.shapes[t])[syn._perm_index(p.layouts[t])])
                out[:, 4 + group] += moved * (syn.OP_LAUNCH_NS + base / syn.HBM_BYTES_PER_NS)
            else:
                out[:, 7] += chain_bytes[j] * pad / syn.HBM_BYTES_PER_NS
        if int(p.opcode[v]) in syn.CONTRACTIONS:
            flops = syn._flops(p, v) / syn.MXU_FLOPS_PER_NS
            minor_in = syn._perms(len(p.shapes[ops[0]]))[values[3 * j + 1], 0]
            ker = syn._perms(len(p.shapes[ops[1]]))[values[3 * j + 2], :2]
            out[:, 3] += flops * (minor_in != int(p.feat[v, syn.COL_IN_FEATURE]))
            out[:, 4] += flops * ~(ker == int(p.feat[v, syn.COL_KER_IN_FEATURE])).any(1)
    return out


def normalised(g, operand_edges: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    scale = float(np.mean(g.config_runtime))
    x = layout_features(g, operand_edges)[:, :width] / scale
    y = g.config_runtime / scale
    return x - x.mean(0), y - y.mean()


def generated_with(data: Path, preset: str | None, seed: int | None) -> tuple[str, int]:
    """(preset, seed) of a synthetic dataset: the arguments, or the download manifest's origin."""
    if preset is not None and seed is not None:
        return preset, seed
    manifest = data / MANIFEST_NAME
    if not manifest.exists():
        raise SystemExit(f"{manifest} not found: pass --preset and --seed that {data} was generated with")
    info = json.loads(manifest.read_text())
    if info.get("source") != "synthetic":
        raise SystemExit(
            f"{manifest}: source {info.get('source')!r}, not synthetic: the cost model has no oracle for it"
        )
    return (preset or info["origin"]["preset"]), (seed if seed is not None else info["origin"]["seed"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/raw")
    parser.add_argument("--collections", nargs="+", default=["layout:xla:random"])
    parser.add_argument("--ridge", type=float, default=1e-6)
    parser.add_argument("--preset", help="preset the files were generated with (default: the manifest's origin)")
    parser.add_argument("--seed", type=int, help="seed the files were generated with (default: the manifest's origin)")
    args = parser.parse_args(argv)
    preset, seed = generated_with(Path(args.data), args.preset, args.seed)
    for name in args.collections:
        col = get_collection(name)
        files = {split: sorted(col.split_dir(Path(args.data), split).glob("*.npz")) for split in ("train", "valid")}
        graphs = {split: [load_graph(f, col, split) for f in paths] for split, paths in files.items()}
        edges = {split: [syn.operand_edge_index(f, preset, seed) for f in paths] for split, paths in files.items()}
        truth = {str(i): g.config_runtime for i, g in enumerate(graphs["valid"])}
        oracle = {
            str(i): syn.layout_runtime(g.node_feat, g.node_opcode, e, g.node_config_ids, g.node_config_feat)
            for i, (g, e) in enumerate(zip(graphs["valid"], edges["valid"]))
        }
        row = [f"{col.name}: oracle {collection_score(col, oracle, truth):.3f}"]
        for label, width in FEATURE_SETS.items():
            parts = [normalised(g, e, width) for g, e in zip(graphs["train"], edges["train"])]
            x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            coef = np.linalg.solve(x.T @ x + args.ridge * np.eye(width), x.T @ y)
            pred = {
                str(i): layout_features(g, e)[:, :width] @ coef
                for i, (g, e) in enumerate(zip(graphs["valid"], edges["valid"]))
            }
            row.append(f"{label} {collection_score(col, pred, truth):.3f}")
        print(", ".join(row))


if __name__ == "__main__":
    main()
