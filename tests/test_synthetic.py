"""The synthetic generator: real format, determinism, atomic writes, and the hidden cost model."""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

from tpuperf.cli import main
from tpuperf.collection import COLLECTIONS, SPLITS, locate
from tpuperf.data import synthetic as syn
from tpuperf.data.npz import LayoutGraph, TileGraph, find_npz, load_graph, validate_file
from tpuperf.data.opcodes import LAYOUT_PROPAGATING
from tpuperf.data.synthetic import (
    ELEMENTWISE,
    Op,
    _Node,
    _node_arrays,
    layout_runtime,
    operand_edge_index,
    tile_runtime,
    write_dataset,
    write_graph,
)
from tpuperf.data.tile_features import element_tiles, tiled_tensors


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(root, "tiny", seed=0)
    return root


def graphs(root: Path, collection, split: str) -> list:
    return [load_graph(p, collection, split) for p in sorted(collection.split_dir(root, split).glob("*.npz"))]


# ------------------------------------------------------------------------------ format


def test_layout_and_counts(tiny) -> None:
    preset = syn.PRESETS["tiny"]
    for col in COLLECTIONS:
        counts = preset.tile_graphs if col.is_tile else preset.layout_graphs[col.source]
        for split, want in zip(SPLITS, counts):
            assert len(list(col.split_dir(tiny, split).glob("*.npz"))) == want, (col.name, split)
    assert sorted(p.name for p in tiny.iterdir()) == ["npz", "sample_submission.csv"]


def test_medium_preset_has_the_real_graph_counts_per_collection() -> None:
    counts = {
        col.name: [syn._graph_count(syn.PRESETS["medium"], col, split) for split in SPLITS] for col in COLLECTIONS
    }
    assert counts == {
        "tile:xla": [600, 150, 150],
        "layout:xla:random": [69, 7, 8],
        "layout:xla:default": [69, 7, 8],
        "layout:nlp:random": [200, 20, 17],
        "layout:nlp:default": [200, 20, 17],
    }


def test_every_file_is_valid_with_real_dtypes(tiny) -> None:
    files = find_npz([tiny])
    assert len(files) == 60
    for path in files:
        validate_file(path)
        col, split = locate(path)
        g = load_graph(path)
        assert g.node_feat.dtype == np.float32 and g.node_feat.shape[1] == 140
        assert g.node_opcode.dtype == np.uint8 and g.node_opcode.max() < 121
        assert g.edge_index.dtype == np.int64
        assert (g.edge_index[:, 1] < g.edge_index[:, 0]).all()  # u consumes v, topological order
        assert g.config_runtime.dtype == np.int64
        assert (g.config_runtime == 0).all() if split == "test" else (g.config_runtime > 0).all()
        if col.is_tile:
            assert isinstance(g, TileGraph) and g.config_feat.dtype == np.float32 and g.config_feat.shape[1] == 24
            assert g.config_runtime_normalizers.dtype == np.int64
            if split == "test":
                assert (g.config_runtime_normalizers == 1).all()
            assert 10 <= len(g.node_feat) <= 40 and 1 <= g.num_configs <= 40
        else:
            assert isinstance(g, LayoutGraph) and g.node_config_feat.dtype == np.float32
            assert g.node_config_feat.shape[1:] == (len(g.node_config_ids), 18)
            assert g.node_config_ids.dtype == np.int64 and g.node_splits.dtype == np.int64
            assert g.node_splits.shape[0] == 1 and g.node_splits[0, 0] == 0 and g.node_splits[0, -1] == len(g.node_feat)
            assert 10 <= len(g.node_feat) <= 40 and 3 <= len(g.node_config_ids) <= 8 and 20 <= g.num_configs <= 60


def test_node_features_look_like_the_real_groups(tiny) -> None:
    feat = np.concatenate([g.node_feat for col in COLLECTIONS for g in graphs(tiny, col, "train")])
    assert (feat[:, 2:21].sum(1) == 1).all()  # exactly one element type
    dims = feat[:, 21:27]
    assert np.array_equal(feat[:, 27], dims.sum(1))
    assert np.array_equal(feat[:, 28], np.prod(np.where(dims > 0, dims, 1), axis=1))  # 1 for scalars and tuples
    for row in feat:  # default layout: a permutation of the tensor's dims
        rank = int((row[21:27] > 0).sum())
        assert sorted(row[134 : 134 + rank]) == list(range(rank))
    constant = (feat == feat[0]).all(0).sum()
    assert constant >= 100, "like the real data, most of the 140 columns are constant"


def test_layout_config_rows(tiny) -> None:
    for col in (c for c in COLLECTIONS if not c.is_tile):
        for g in graphs(tiny, col, "train"):
            for group in range(3):
                block = g.node_config_feat[:, :, 6 * group : 6 * group + 6]
                ranks = (block >= 0).sum(2)
                for rank in np.unique(ranks[ranks > 0]):
                    rows = block[ranks == rank]
                    assert (np.sort(rows[:, :rank], axis=1) == np.arange(rank)).all()  # a permutation
                    assert (rows[:, rank:] == -1).all()  # -1 pads beyond the rank
            is_default = (g.node_config_feat == -1).all(2).mean()
            assert (0.1 < is_default < 0.7) if col.search == "random" else is_default < 0.2


def test_sample_submission(tiny) -> None:
    lines = (tiny / "sample_submission.csv").read_text().splitlines()
    assert lines[0] == "ID,TopConfigs"
    rows = dict(line.split(",") for line in lines[1:])
    expected = {}
    for col in COLLECTIONS:
        for g in graphs(tiny, col, "test"):
            expected[col.submission_id(g.graph_id)] = (
                "0;1;2;3;4" if col.is_tile else ";".join(map(str, range(g.num_configs)))
            )
    assert rows == expected


def test_extra_config_quirk(tmp_path, monkeypatch) -> None:
    """Like the real data: one layout test file holds 1 config more than its sample row lists."""
    quirky = dataclasses.replace(syn.PRESETS["tiny"], layout_test_configs=30, extra_config_test_file=True)
    monkeypatch.setitem(syn.PRESETS, "quirky", quirky)
    write_dataset(tmp_path / "d", "quirky", seed=1)
    rows = dict(line.split(",") for line in (tmp_path / "d" / "sample_submission.csv").read_text().splitlines()[1:])
    counts = {}
    for col in (c for c in COLLECTIONS if not c.is_tile):
        for g in graphs(tmp_path / "d", col, "test"):
            counts[col.submission_id(g.graph_id)] = g.num_configs
            assert rows[col.submission_id(g.graph_id)] == ";".join(map(str, range(30)))
    assert sorted(counts.values()) == [30] * (len(counts) - 1) + [31]


# ------------------------------------------------------------------------------ writing


def test_same_seed_same_bytes_other_seed_differs(tmp_path, tiny) -> None:
    write_dataset(tmp_path / "again", "tiny", seed=0)
    first = {p.relative_to(tiny): p.read_bytes() for p in sorted(tiny.rglob("*")) if p.is_file()}
    second = {
        p.relative_to(tmp_path / "again"): p.read_bytes()
        for p in sorted((tmp_path / "again").rglob("*"))
        if p.is_file()
    }
    assert first == second
    write_dataset(tmp_path / "other", "tiny", seed=1)
    assert (tmp_path / "other" / "sample_submission.csv").read_bytes() != first[Path("sample_submission.csv")]


# sha256 of the tiny preset (seed 0) as git main 2cae190 (before the files' edge rows were sorted)
# wrote it, through main_comparable_digest: computed once by running that function on a dataset
# written by 2cae190's src (``git archive 2cae190 src``, PYTHONPATH to it, write_dataset(d, "tiny", 0)).
MAIN_2CAE190_TINY_DIGEST = "43bd6f2141fe7c0f4492f017e0733e7a46fa58c0a6cc3a75e57fcf8ee4c41159"


def element_config_feat(arrays) -> np.ndarray:
    """A tile file's config_feat as 2cae190 wrote it: kernel (largest parameter) and output (the
    root) tiles in elements in logical dim order, then their sum and product, in float32."""
    feat, old = arrays["node_feat"], np.zeros_like(arrays["config_feat"])
    output, kernel = tiled_tensors(feat, arrays["node_opcode"], arrays["edge_index"])
    for node, start in ((kernel, 0), (output, 8)):
        rank = int((feat[node, 21:27] > 0).sum())
        dims, layout = feat[node, 21 : 21 + rank], feat[node, 134 : 134 + rank]
        tiles = element_tiles(arrays["config_feat"][:, start : start + rank], dims, layout)
        old[:, start : start + rank], old[:, start + 6], old[:, start + 7] = tiles, tiles.sum(1), tiles.prod(1)
    return old


def main_comparable_digest(root: Path) -> str:
    """sha256 over every file's path and arrays (key, dtype, shape, bytes) and the sample
    submission, with the changes made since 2cae190 undone: edge rows sorted by (u, v) (2cae190
    wrote operand order), column 28 of tuple nodes 0 (2cae190 wrote 0, the real files 1), the
    s32 / bf16 element types back in one-hot columns 8 / 10 (the real files' u8 / u32; now 6 / 15)
    and tile bounds in the real files' convention (2cae190 wrote elements in logical order:
    :func:`element_config_feat`)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.npz")):
        digest.update(path.relative_to(root).as_posix().encode())
        with np.load(path) as arrays:
            for key in arrays.files:
                a = arrays[key]
                if key == "edge_index":
                    a = a[np.lexsort((a[:, 1], a[:, 0]))]
                if key == "node_feat":
                    a = a.copy()
                    a[arrays["node_opcode"] == Op.TUPLE, 28] = 0
                    a[:, [8, 10]], a[:, [6, 15]] = a[:, [6, 15]], 0
                if key == "config_feat":
                    a = element_config_feat(arrays)
                a = np.ascontiguousarray(a)
                digest.update(f"{key} {a.dtype.str} {a.shape}".encode())
                digest.update(a.tobytes())
    digest.update((root / "sample_submission.csv").read_bytes())
    return digest.hexdigest()


def test_same_graphs_configs_and_runtimes_as_before_the_edge_rows_were_sorted_and_bounds_reencoded(tiny) -> None:
    assert main_comparable_digest(tiny) == MAIN_2CAE190_TINY_DIGEST


def test_operand_edge_index_gives_the_order_the_runtimes_were_computed_from(tiny, tmp_path) -> None:
    """It is the file's edge set in another row order (the stored runtimes agree with the oracle
    over it: test_stored_runtimes_are_the_oracle_plus_small_noise), and that order matters: on some
    layout file the oracle over the id-sorted rows differs."""
    differs = []
    for col in (c for c in COLLECTIONS if not c.is_tile):
        for path in find_npz([col.split_dir(tiny, split) for split in SPLITS]):
            g, edges = load_graph(path), operand_edge_index(path, "tiny", 0)
            assert edges.dtype == np.int64 and sorted(edges.tolist()) == g.edge_index.tolist()
            configs = (g.node_config_ids, g.node_config_feat)
            by_operand = layout_runtime(g.node_feat, g.node_opcode, edges, *configs)
            differs.append(
                not np.allclose(layout_runtime(g.node_feat, g.node_opcode, g.edge_index, *configs), by_operand)
            )
    assert any(differs)
    path = sorted(COLLECTIONS[1].split_dir(tiny, "train").glob("*.npz"))[0]
    with pytest.raises(ValueError, match=f"{path}: preset 'tiny' with seed 1 writes no file of this name"):
        operand_edge_index(path, "tiny", 1)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        operand_edge_index(path, "huge", 0)
    with pytest.raises(ValueError, match="not under npz/<collection>/<split>/"):
        operand_edge_index(tmp_path / "g.npz", "tiny", 0)
    changed = COLLECTIONS[1].split_dir(tmp_path, "train") / path.name
    changed.parent.mkdir(parents=True)
    with np.load(path) as arrays:
        write_graph(changed, {**arrays, "edge_index": arrays["edge_index"][:-1]})
    with pytest.raises(ValueError, match="its nodes or edges are not those preset 'tiny' with seed 0 generates"):
        operand_edge_index(changed, "tiny", 0)


def test_write_graph_round_trip_with_fixed_zip_dates(tmp_path) -> None:
    arrays = syn.make_tile_graph(np.random.default_rng(0), 20, 15)
    write_graph(tmp_path / "g.npz", arrays)
    with np.load(tmp_path / "g.npz") as loaded:
        assert list(loaded.files) == list(arrays)
        for key, value in arrays.items():
            assert loaded[key].dtype == value.dtype and np.array_equal(loaded[key], value)
    with zipfile.ZipFile(tmp_path / "g.npz") as zf:
        assert {i.date_time for i in zf.infolist()} == {syn.ZIP_DATE}
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
    assert [p.name for p in tmp_path.iterdir()] == ["g.npz"]  # no temp file left


def test_write_is_all_or_nothing(tmp_path, monkeypatch) -> None:
    written = []

    def failing_write(path, arrays):
        written.append(path)
        if len(written) == 5:
            raise OSError("disk full")
        write_graph(path, arrays)

    monkeypatch.setattr(syn, "write_graph", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(tmp_path / "out", "tiny")
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary directory


def test_existing_output_needs_overwrite(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_dataset(out, "tiny")
    write_dataset(out, "tiny", overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "sample_submission.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(ValueError, match="unknown preset"):
        write_dataset(tmp_path / "x", "huge")


def test_cli_synth(tmp_path, capsys) -> None:
    assert main(["synth", "--out", str(tmp_path / "d"), "--preset", "tiny", "--seed", "2"]) == 0
    assert "wrote 60 synthetic graphs (preset 'tiny', seed 2)" in capsys.readouterr().out
    assert main(["synth", "--out", str(tmp_path / "d"), "--preset", "tiny"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_make_graph_sizes() -> None:
    rng = np.random.default_rng(3)
    for source in ("xla", "nlp"):
        g = syn.make_layout_graph(rng, 300, 20, 50, source=source, search="default")
        assert 300 <= len(g["node_feat"]) <= 300 + syn.MAX_OVERSHOOT
        assert len(g["node_config_ids"]) == 20 and g["node_config_feat"].shape == (50, 20, 18)
        assert set(g["node_opcode"][g["node_config_ids"]]) <= {Op.DOT, Op.CONVOLUTION, Op.RESHAPE}
        assert (g["node_config_feat"][0] == -1).all(1).mean() < 0.3  # default search: explicit values
    tile = syn.make_tile_graph(rng, 40, 100, labelled=False)
    assert 40 <= len(tile["node_feat"]) <= 40 + syn.MAX_OVERSHOOT and len(tile["config_feat"]) <= 100
    assert len(np.unique(tile["config_feat"], axis=0)) == len(tile["config_feat"])  # distinct configs


# ------------------------------------------------------------------------------ cost model


def test_stored_runtimes_are_the_oracle_plus_small_noise(tiny) -> None:
    for col in COLLECTIONS:
        for path in sorted(col.split_dir(tiny, "train").glob("*.npz")):
            g, edges = load_graph(path), operand_edge_index(path, "tiny", 0)
            if col.is_tile:
                oracle = tile_runtime(g.node_feat, g.node_opcode, edges, g.config_feat)
                sigma = syn.TILE_NOISE_SIGMA
            else:
                oracle = layout_runtime(g.node_feat, g.node_opcode, edges, g.node_config_ids, g.node_config_feat)
                sigma = syn.LAYOUT_NOISE_SIGMA
            log_ratio = np.log(g.config_runtime / oracle)
            assert np.abs(log_ratio).max() < 6 * sigma, col.name
            assert 0.3 * sigma < log_ratio.std() < 2 * sigma


def test_oracle_ranks_random_layouts_well(tiny) -> None:
    for col in (c for c in COLLECTIONS if c.search == "random"):
        taus = []
        for path in sorted(col.split_dir(tiny, "valid").glob("*.npz")):
            g, edges = load_graph(path), operand_edge_index(path, "tiny", 0)
            oracle = layout_runtime(g.node_feat, g.node_opcode, edges, g.node_config_ids, g.node_config_feat)
            taus.append(kendalltau(oracle, g.config_runtime)[0])
        assert 0.8 < np.mean(taus) < 1.0, col.name


def dot_graph(lhs_layout: tuple[int, int]) -> dict[str, np.ndarray]:
    """param (128, 8) -> dot contracting its dim 1 with param (8, 128) -> tuple root."""
    nodes = [
        _Node(Op.PARAMETER, (128, 8), "f32", [], lhs_layout, param_number=0),
        _Node(Op.PARAMETER, (8, 128), "f32", [], (1, 0), param_number=1),
        _Node(Op.DOT, (128, 128), "f32", [0, 1], (1, 0), contracting=(1, 0, 1)),
        _Node(Op.TUPLE, (), "tuple", [2]),
    ]
    return _node_arrays(nodes)


def dot_runtime(arrays: dict[str, np.ndarray], input_layout: tuple[int, int] | None) -> float:
    row = np.full((1, 1, 18), -1, np.float32)
    if input_layout is not None:
        row[0, 0, 0:2] = (1, 0)  # output: its default
        row[0, 0, 6:8] = input_layout
        row[0, 0, 12:14] = (1, 0)  # kernel: its default
    return float(
        layout_runtime(arrays["node_feat"], arrays["node_opcode"], arrays["edge_index"], np.array([2]), row)[0]
    )


def test_layout_cost_of_a_transposed_input_by_hand() -> None:
    """Reading a (128, 8) f32 operand with dim 0 minor instead of dim 1: a transpose copy
    (launch + 4096 B x (pad 16 + pad 1) / HBM), a cheaper read (pad 1 instead of 16), and
    contraction over a non-minor dim (2 x 128 x 128 x 8 flops x (2 - 1))."""
    arrays = dot_graph((1, 0))
    default = dot_runtime(arrays, None)
    assert dot_runtime(arrays, (1, 0)) == pytest.approx(default)  # explicit default = -1 row
    nbytes, hbm = 128 * 8 * 4, syn.HBM_BYTES_PER_NS
    copy = syn.OP_LAUNCH_NS + nbytes * (16 + 1) / hbm
    read = nbytes * (1 - 16) / hbm
    flops = 2 * 128 * 128 * 8 / syn.MXU_FLOPS_PER_NS * (syn.NONMINOR_CONTRACTION - 1)
    assert dot_runtime(arrays, (0, 1)) - default == pytest.approx(copy + read + flops)


def test_same_config_costs_differ_with_the_graph() -> None:
    """The input layout (0, 1) needs a copy when the operand arrives in (1, 0), none when the
    parameter is already stored that way: only the graph tells which."""
    as_row_major, as_col_major = dot_graph((1, 0)), dot_graph((0, 1))
    assert dot_runtime(as_row_major, (0, 1)) > dot_runtime(as_row_major, (1, 0))
    assert dot_runtime(as_col_major, (0, 1)) < dot_runtime(as_col_major, (1, 0))


def test_output_layout_propagates_through_elementwise_consumers() -> None:
    """Changing a dot's output layout re-pads every elementwise op below it and costs a copy
    at the root: the longer the chain, the bigger the change."""

    def chain(length: int) -> dict[str, np.ndarray]:
        nodes = [
            _Node(Op.PARAMETER, (64, 256), "f32", [], (1, 0), param_number=0),
            _Node(Op.PARAMETER, (256, 1000), "f32", [], (1, 0), param_number=1),
            _Node(Op.DOT, (64, 1000), "f32", [0, 1], (1, 0), contracting=(1, 0, 1)),
        ]
        for _ in range(length):
            nodes.append(_Node(Op.EXPONENTIAL, (64, 1000), "f32", [len(nodes) - 1], (1, 0)))
        nodes.append(_Node(Op.TUPLE, (), "tuple", [len(nodes) - 1]))
        return _node_arrays(nodes)

    def extra_cost(arrays) -> float:
        rows = np.full((2, 1, 18), -1, np.float32)
        rows[1, 0, 0:2] = (0, 1)  # output with dim 0 (64) minor: 128/64 lane padding
        t = layout_runtime(arrays["node_feat"], arrays["node_opcode"], arrays["edge_index"], np.array([2]), rows)
        return float(t[1] - t[0])

    short, long = extra_cost(chain(1)), extra_cost(chain(4))
    assert 0 < short < long
    exp_op = 2 * 64 * 1000 * 4 / syn.HBM_BYTES_PER_NS  # one EXP: read + write
    pad_change = (128 / 64) * (1000 / 1000) - (1024 / 1000) * (64 / 64)
    assert long - short == pytest.approx(3 * exp_op * pad_change)


def tile_graph() -> dict[str, np.ndarray]:
    """param (1000, 512) f32 -> exp -> convert (root)."""
    nodes = [
        _Node(Op.PARAMETER, (1000, 512), "f32", [], (1, 0), param_number=0),
        _Node(Op.EXPONENTIAL, (1000, 512), "f32", [0], (1, 0)),
        _Node(Op.CONVERT, (1000, 512), "bf16", [1], (1, 0)),
    ]
    return _node_arrays(nodes)


def tile_configs(*tiles: tuple[int, int]) -> np.ndarray:
    """Configs tiling tile_graph's row-major tensors by (rows, cols) elements, as files hold them:
    8-row and 128-lane units (tpuperf.data.tile_features)."""
    feat = np.zeros((len(tiles), 24), np.float32)
    for i, (rows, cols) in enumerate(tiles):
        rows, cols = rows / 8, cols / 128
        feat[i, 0:8] = (rows, cols, 0, 0, 0, 0, rows + cols, rows * cols)
        feat[i, 8:16] = feat[i, 0:8]
    return feat


def test_tile_padding_waste_costs_more(monkeypatch) -> None:
    monkeypatch.setattr(syn, "VMEM_BYTES", 1 << 40)  # isolate padding from spilling
    monkeypatch.setattr(syn, "TILE_STEP_NS", 0.0)  # and from per-tile overhead
    a = tile_graph()
    fits, wastes = tile_runtime(a["node_feat"], a["node_opcode"], a["edge_index"], tile_configs((200, 512), (256, 512)))
    assert fits < wastes  # 1000 rows in tiles of 256 pad to 1024; in tiles of 200, no padding


def test_tile_overflowing_vmem_spills() -> None:
    a = tile_graph()
    small, big = tile_configs((8, 512)), tile_configs((1000, 512))
    args = (a["node_feat"], a["node_opcode"], a["edge_index"])
    work_bytes = 1000 * 512 * (4 + 2)  # exp (f32) and convert (bf16) outputs
    in_bytes = 1000 * 512 * 4
    assert (work_bytes + in_bytes) / syn.VMEM_BYTES > 1  # the whole tensor does not fit
    assert tile_runtime(*args, big)[0] > tile_runtime(*args, small)[0]
    expected_spill = 1 + syn.SPILL_SLOPE * np.log2((work_bytes + in_bytes) / syn.VMEM_BYTES)
    no_spill = tile_runtime(*args, big)[0] - syn.OP_LAUNCH_NS
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(syn, "VMEM_BYTES", 1 << 40)
        assert no_spill / (tile_runtime(*args, big)[0] - syn.OP_LAUNCH_NS) == pytest.approx(expected_spill)


def test_synthetic_ops_carry_the_real_tpugraphs_ids():
    # ids from tpu_graphs/process_data/xla/hlo_opcode.h; the generator once used other labels
    # (constant 41 = fusion, reduce 83 = select, transpose 95 = subtract, tuple 98 = transpose)
    assert (Op.CONSTANT, Op.CONVERT, Op.EXPONENTIAL, Op.NEGATE) == (24, 25, 37, 60)
    assert (Op.SUBTRACT, Op.DIVIDE, Op.MAXIMUM) == (95, 32, 57)
    assert (Op.REDUCE, Op.TRANSPOSE, Op.TUPLE) == (70, 98, 100)
    assert ELEMENTWISE <= LAYOUT_PROPAGATING and not ({Op.REDUCE, Op.TRANSPOSE, Op.TUPLE} & LAYOUT_PROPAGATING)
