"""Reader and validator: real files, every class of bad input, bounded-memory validation, ``tpuperf validate``."""

from __future__ import annotations

import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tpuperf.cli import main
from tpuperf.collection import get_collection, locate
from tpuperf.data import npz as dataset
from tpuperf.data.npz import (
    NODE_FEAT_DIM,
    DataFormatError,
    LayoutGraph,
    TileGraph,
    iter_chunks,
    load_graph,
    read_header,
    validate_file,
)

# ---------------------------------------------------------------- real files


def test_reader_agrees_with_np_load_on_real_file(real_npz: Path) -> None:
    col, split = locate(real_npz)
    graph = load_graph(real_npz)
    assert isinstance(graph, TileGraph if col.is_tile else LayoutGraph)
    assert graph.graph_id == real_npz.stem
    with np.load(real_npz) as ref:
        assert set(ref.files) <= {f for f in vars(graph)}
        for key in ref.files:
            got = getattr(graph, key)
            assert got.dtype == ref[key].dtype, key
            np.testing.assert_array_equal(got, ref[key], err_msg=key)
    n, m, c = len(graph.node_feat), len(graph.edge_index), graph.num_configs
    assert graph.node_feat.shape == (n, NODE_FEAT_DIM) and graph.node_feat.dtype == np.float32
    assert graph.node_opcode.shape == (n,) and graph.node_opcode.max() <= 120
    assert graph.edge_index.shape == (m, 2) and 0 <= graph.edge_index.min() and graph.edge_index.max() < n
    assert graph.config_runtime.shape == (c,) and graph.config_runtime.dtype == np.int64
    if isinstance(graph, TileGraph):
        assert graph.config_feat.shape == (c, 24)
        assert graph.config_runtime_normalizers.shape == (c,)
    else:
        nc = len(graph.node_config_ids)
        assert graph.node_config_feat.shape == (c, nc, 18)
        assert graph.node_config_ids.max() < n
        assert graph.node_splits.shape[0] == 1
    if split == "test":
        assert (graph.config_runtime == 0).all()  # zeroed runtimes are legitimate in test files
    else:
        assert (graph.config_runtime > 0).all()


def test_header_and_lazy_configs_on_real_file(real_npz: Path) -> None:
    infos = read_header(real_npz)
    with np.load(real_npz) as ref:
        assert {k: (i.shape, i.dtype) for k, i in infos.items()} == {k: (ref[k].shape, ref[k].dtype) for k in ref.files}
        lazy = load_graph(real_npz, load_configs=False)
        if isinstance(lazy, LayoutGraph):
            assert lazy.node_config_feat is None
            chunks = list(iter_chunks(real_npz, "node_config_feat", max_bytes=64 << 10))
            assert len(chunks) > 1
            np.testing.assert_array_equal(np.concatenate(chunks), ref["node_config_feat"])
    validate_file(real_npz)


def test_validate_cli_accepts_all_real_files(shared_data: Path, capsys) -> None:
    count = len(list(shared_data.rglob("*.npz")))
    assert main(["validate", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "BAD" not in out
    assert f"{count} files checked, {count} valid, 0 bad" in out


# ---------------------------------------------------------------- bad inputs
# Each case: (collection, split, change) where change(arrays) returns (replacements, dropped keys),
# then the field the error must name and a piece of the problem it must state.

Change = Callable[[dict[str, np.ndarray]], tuple[dict[str, np.ndarray], tuple[str, ...]]]


def _set(key: str, index, value) -> Change:
    def change(a: dict[str, np.ndarray]):
        arr = a[key].copy()
        arr[index] = value
        return {key: arr}, ()

    return change


def _replace(key: str, fn: Callable[[np.ndarray], np.ndarray]) -> Change:
    return lambda a: ({key: fn(a[key])}, ())


def _drop(key: str) -> Change:
    return lambda a: ({}, (key,))


def _zero_configs(config_key: str, extra: tuple[str, ...] = ()) -> Change:
    return lambda a: ({k: a[k][:0] for k in ("config_runtime", config_key, *extra)}, ())


TILE, LAYOUT = "tile:xla", "layout:xla:random"
BAD_CASES = {
    "missing key (tile)": (
        TILE,
        "train",
        _drop("config_runtime_normalizers"),
        "config_runtime_normalizers",
        "missing key",
    ),
    "missing key (layout)": (LAYOUT, "train", _drop("node_config_ids"), "node_config_ids", "missing key"),
    "wrong rank": (TILE, "train", _replace("node_feat", lambda x: x[0]), "node_feat", "expected rank 2"),
    "wrong shape": (TILE, "train", _replace("node_feat", lambda x: x[:, :139]), "node_feat", "axis 1 should be 140"),
    "wrong shape (config)": (
        LAYOUT,
        "train",
        _replace("node_config_feat", lambda x: x[..., :17]),
        "node_config_feat",
        "axis 2 should be 18",
    ),
    "float edge ids": (
        TILE,
        "train",
        _replace("edge_index", lambda x: x.astype(np.float32)),
        "edge_index",
        "is not integer",
    ),
    "integer features": (
        LAYOUT,
        "train",
        _replace("node_feat", lambda x: x.astype(np.int32)),
        "node_feat",
        "is not floating-point",
    ),
    "NaN in node_feat": (TILE, "train", _set("node_feat", (2, 7), np.nan), "node_feat", "contains NaN"),
    "inf in config_feat": (TILE, "valid", _set("config_feat", (1, 3), np.inf), "config_feat", "contains inf"),
    "NaN in node_config_feat": (
        LAYOUT,
        "test",
        _set("node_config_feat", (3, 1, 5), np.nan),
        "node_config_feat",
        "contains NaN",
    ),
    "-inf in node_feat (layout)": (LAYOUT, "train", _set("node_feat", (0, 0), -np.inf), "node_feat", "contains inf"),
    "edge id too big": (TILE, "train", _set("edge_index", (0, 1), 6), "edge_index", "outside 0..5"),
    "negative edge id": (LAYOUT, "train", _set("edge_index", (4, 0), -1), "edge_index", "outside 0..5"),
    "config node id too big": (LAYOUT, "train", _set("node_config_ids", 1, 6), "node_config_ids", "outside 0..5"),
    "repeated config node": (
        LAYOUT,
        "test",
        _replace("node_config_ids", lambda x: np.full_like(x, x[0])),
        "node_config_ids",
        "repeats node ids",
    ),
    "node split too big": (LAYOUT, "train", _set("node_splits", (0, 1), 7), "node_splits", "outside 0..6"),
    "config count (tile feat)": (
        TILE,
        "train",
        _replace("config_feat", lambda x: x[:-1]),
        "config_feat",
        "3 configurations but config_runtime has 4",
    ),
    "config count (layout feat)": (
        LAYOUT,
        "train",
        _replace("node_config_feat", lambda x: x[:-1]),
        "node_config_feat",
        "3 configurations but config_runtime has 4",
    ),
    "config count (runtimes)": (
        LAYOUT,
        "test",
        _replace("config_runtime", lambda x: np.zeros(5, np.int64)),
        "node_config_feat",
        "4 configurations but config_runtime has 5",
    ),
    "normaliser count": (
        TILE,
        "train",
        _replace("config_runtime_normalizers", lambda x: x[:-1]),
        "config_runtime_normalizers",
        "length 3, expected 4",
    ),
    "configurable node count": (
        LAYOUT,
        "train",
        _replace("node_config_ids", lambda x: x[:1]),
        "node_config_feat",
        "2 configurable nodes but node_config_ids has 1",
    ),
    "opcode count": (TILE, "train", _replace("node_opcode", lambda x: x[:-1]), "node_opcode", "5 opcodes for 6 nodes"),
    "zero configs (tile)": (
        TILE,
        "train",
        _zero_configs("config_feat", ("config_runtime_normalizers",)),
        "config_runtime",
        "zero configurations",
    ),
    "zero configs (layout)": (
        LAYOUT,
        "test",
        _zero_configs("node_config_feat"),
        "config_runtime",
        "zero configurations",
    ),
    "zero runtime in train": (
        TILE,
        "train",
        _set("config_runtime", 1, 0),
        "config_runtime",
        "1 non-positive runtimes in a train file",
    ),
    "negative runtime in valid": (
        LAYOUT,
        "valid",
        _set("config_runtime", 0, -5),
        "config_runtime",
        "1 non-positive runtimes in a valid file",
    ),
    "zero runtimes in valid": (
        LAYOUT,
        "valid",
        _replace("config_runtime", np.zeros_like),
        "config_runtime",
        "4 non-positive runtimes in a valid file",
    ),
    "negative runtime in test": (TILE, "test", _set("config_runtime", 2, -1), "config_runtime", "negative runtimes"),
    # `tpuperf validate` passed these; preprocess and rank then refused them (after the download had taken them)
    "layout value not an integer": (
        LAYOUT,
        "test",
        _set("node_config_feat", (1, 0, 3), 0.5),
        "node_config_feat",
        "value 0.5 is not an integer in -1..5",
    ),
    "layout value out of range": (
        LAYOUT,
        "train",
        _set("node_config_feat", (0, 1, 17), 6),
        "node_config_feat",
        "value 6.0 is not an integer in -1..5",
    ),
    "zero normaliser in train": (
        TILE,
        "train",
        _set("config_runtime_normalizers", 0, 0),
        "config_runtime_normalizers",
        "non-positive normalisers",
    ),
    # the pipeline reads opcodes as int32 and features as float32: these wrapped to opcode 3 / became inf unchecked
    "opcode id beyond int32": (
        LAYOUT,
        "test",
        _replace("node_opcode", lambda x: np.where(np.arange(len(x)) == 1, 2**32 + 3, x.astype(np.int64))),
        "node_opcode",
        "opcode id 4294967299 does not fit int32",
    ),
    "node_feat beyond float32": (
        TILE,
        "train",
        _replace(
            "node_feat", lambda x: np.where(np.arange(x.size).reshape(x.shape) == 9, -1e300, x.astype(np.float64))
        ),
        "node_feat",
        "value -1e+300 is beyond float32's range",
    ),
}


def assert_names(exc: DataFormatError, path: Path, field: str | None, problem: str) -> None:
    """The error names the file, the field and the problem, in its attributes and in its message."""
    assert exc.path == path
    assert exc.field == field
    assert problem in exc.problem
    text = str(exc)
    assert str(path) in text and problem in text
    if field:
        assert f": {field}: " in text


@pytest.mark.parametrize("case", list(BAD_CASES), ids=list(BAD_CASES))
def test_bad_file_is_rejected_naming_file_field_problem(tmp_path, write_graph, rewrite_npz, case) -> None:
    collection, split, change, field, problem = BAD_CASES[case]
    path = write_graph(tmp_path, collection, split)
    validate_file(path)  # the untouched file is valid
    with np.load(path) as npz:
        replaced, dropped = change({k: npz[k] for k in npz.files})
    rewrite_npz(path, drop=dropped, **replaced)
    for check in (validate_file, load_graph):
        with pytest.raises(DataFormatError) as info:
            check(path)
        assert_names(info.value, path, field, problem)


@pytest.mark.parametrize("stored", ["rank 2", "rank 1", "absent"])
def test_node_splits_of_either_rank_or_absent_is_accepted(tmp_path, write_graph, rewrite_npz, stored) -> None:
    """The real files store node_splits (1, k), the official README describes (k,); it is an unused hint."""
    path = write_graph(tmp_path, LAYOUT, "train")
    splits = {"rank 2": np.array([[0, 3]], np.int64), "rank 1": np.array([0, 3], np.int64)}.get(stored)
    rewrite_npz(path, drop=("node_splits",), **({} if splits is None else {"node_splits": splits}))
    validate_file(path)
    graph = load_graph(path)
    if splits is None:
        assert graph.node_splits is None
    else:
        assert graph.node_splits.shape == splits.shape
        np.testing.assert_array_equal(graph.node_splits, splits)
    assert graph.num_configs == 4 and len(graph.node_config_ids) == 2


@pytest.mark.parametrize(
    "bad, problem",
    [
        (np.zeros((1, 1, 2), np.int64), "rank 3 (shape (1, 1, 2)), expected rank 1 or 2"),
        (np.int64(0), "rank 0 (shape ()), expected rank 1 or 2"),
        (np.array([0.0, 3.0]), "is not integer"),
        (np.array([0, 7]), "outside 0..6"),
    ],
)
def test_node_splits_of_other_ranks_dtypes_or_values_is_refused(
    tmp_path, write_graph, rewrite_npz, bad, problem
) -> None:
    path = rewrite_npz(write_graph(tmp_path, LAYOUT, "train"), node_splits=bad)
    with pytest.raises(DataFormatError) as info:
        validate_file(path)
    assert_names(info.value, path, "node_splits", problem)


@pytest.mark.parametrize("collection", [TILE, LAYOUT])
def test_unknown_keys_are_ignored(tmp_path, write_graph, rewrite_npz, collection) -> None:
    """Arrays the format does not define are neither read nor checked: an object array (unreadable without
    pickle) stopped `tpuperf validate` with a message naming no file, a NaN in one refused the file."""
    path = write_graph(tmp_path, collection, "test")
    want = load_graph(path)
    rewrite_npz(path, notes=np.array([{"by": "me"}], dtype=object), scratch=np.array([np.nan, np.inf]))
    assert {"notes", "scratch"} <= set(read_header(path))
    validate_file(path)
    got = load_graph(path)
    for field in ("node_feat", "node_opcode", "edge_index", "config_runtime"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    assert main(["validate", str(path)]) == 0


def test_a_new_program_may_hold_zero_normalisers(tmp_path, write_graph) -> None:
    """README: a new program's runtimes and normalisers may be zeros or absent (rank reads it with
    runtimes_optional); zero normalisers then stand for the absent ones (1). A zero normaliser beside a
    measured runtime stays refused, and so do zero normalisers in a file read as data (validate)."""
    zeros = np.zeros(4, np.int64)
    path = write_graph(tmp_path, TILE, "test", config_runtime_normalizers=zeros)
    graph = load_graph(path, runtimes_optional=True)
    np.testing.assert_array_equal(graph.config_runtime_normalizers, np.ones(4, np.int64))
    with pytest.raises(DataFormatError, match="non-positive normalisers"):
        validate_file(path)
    measured = write_graph(
        tmp_path, TILE, "test", name="m", config_runtime=np.array([0, 0, 5, 0]), config_runtime_normalizers=zeros
    )
    with pytest.raises(DataFormatError, match="config_runtime_normalizers: 1 non-positive normalisers beside"):
        load_graph(measured, runtimes_optional=True)


@pytest.mark.parametrize("collection", [TILE, "layout:nlp:default"])
def test_test_files_with_zero_runtimes_pass(tmp_path, write_graph, collection) -> None:
    graph = load_graph(write_graph(tmp_path, collection, "test"))
    assert (graph.config_runtime == 0).all()
    with pytest.raises(DataFormatError, match="non-positive runtimes in a train file"):
        load_graph(write_graph(tmp_path, collection, "train", config_runtime=graph.config_runtime))


def test_real_layout_file_with_one_rewritten_array_is_rejected(tmp_path, shared_data, rewrite_npz) -> None:
    rel = Path("npz/layout/xla/default/train/unet3d.npz")
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    path.write_bytes((shared_data / rel).read_bytes())
    with np.load(path) as npz:
        feat, ids, n = npz["node_config_feat"].copy(), npz["node_config_ids"].copy(), len(npz["node_feat"])
    feat[-1, -1, -1] = np.nan  # the very last value: validation has to stream the whole array to see it
    rewrite_npz(path, node_config_feat=feat)
    with pytest.raises(DataFormatError) as info:
        validate_file(path)
    assert_names(info.value, path, "node_config_feat", "contains NaN")
    ids[0] = n
    rewrite_npz(path, node_config_feat=np.nan_to_num(feat, nan=-1.0), node_config_ids=ids)
    with pytest.raises(DataFormatError) as info:
        validate_file(path)
    assert_names(info.value, path, "node_config_ids", f"outside 0..{n - 1}")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_or_empty_archive(tmp_path, write_graph, keep) -> None:
    path = write_graph(tmp_path, LAYOUT, "train")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataFormatError) as info:
        validate_file(path)
    assert_names(info.value, path, None, "unreadable or truncated archive")


def test_not_a_zip(tmp_path) -> None:
    path = get_collection(TILE).split_dir(tmp_path, "train") / "text.npz"
    path.parent.mkdir(parents=True)
    path.write_text("node_feat,node_opcode\n1,2\n")
    with pytest.raises(DataFormatError) as info:
        validate_file(path)
    assert_names(info.value, path, None, "unreadable or truncated archive")


def test_corrupt_member_data_names_the_field(tmp_path, write_graph) -> None:
    path = write_graph(tmp_path, LAYOUT, "train")
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("node_config_feat.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    middle = start + info.compress_size // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))
    with pytest.raises(DataFormatError) as exc:
        validate_file(path)
    assert exc.value.path == path and exc.value.field == "node_config_feat"
    assert "truncated" in exc.value.problem or "unreadable" in exc.value.problem


def test_file_outside_the_layout_needs_an_explicit_collection(tmp_path, write_graph) -> None:
    path = write_graph(tmp_path, TILE, "train").rename(tmp_path / "loose.npz")
    with pytest.raises(DataFormatError, match="cannot tell the collection"):
        validate_file(path)
    assert isinstance(load_graph(path, get_collection(TILE), "train"), TileGraph)


def test_graph_without_edges_loads(tmp_path, write_graph) -> None:
    """A one-op kernel has no edges; an empty C-ordered edge_index must not break chunked reading."""
    path = write_graph(tmp_path, TILE, "train", edge_index=np.zeros((0, 2), np.int64))
    graph = load_graph(path)
    assert graph.edge_index.shape == (0, 2) and graph.edge_index.dtype == np.int64


# ---------------------------------------------------------------- bounded memory


def test_iter_chunks_streams_rows_within_the_budget(tmp_path, write_graph) -> None:
    feat = np.arange(50 * 2 * 18, dtype=np.float32).reshape(50, 2, 18)
    path = write_graph(tmp_path, LAYOUT, "train", node_config_feat=feat, config_runtime=np.arange(1, 51))
    row_bytes = 2 * 18 * 4
    chunks = list(iter_chunks(path, "node_config_feat", max_bytes=7 * row_bytes))
    assert [len(c) for c in chunks] == [7] * 7 + [1]
    np.testing.assert_array_equal(np.concatenate(chunks), feat)


def test_validation_does_not_decompress_the_whole_config_array(tmp_path, write_graph, monkeypatch) -> None:
    """node_config_feat of 29 MB (zeros, so the file is small); with a 1 MB streaming budget,
    validating must peak far below the array's size, while loading it must not."""
    configs, nodes, nc = 2_000, 300, 200
    feat = np.zeros((configs, nc, 18), np.float32)
    ids = np.arange(nc, dtype=np.int64)
    runtime = np.arange(1, configs + 1, dtype=np.int64)
    path = write_graph(
        tmp_path,
        LAYOUT,
        "train",
        node_feat=np.zeros((nodes, NODE_FEAT_DIM), np.float32),
        node_opcode=np.zeros(nodes, np.uint8),
        edge_index=np.zeros((0, 2), np.int64),
        node_config_ids=ids,
        node_config_feat=feat,
        config_runtime=runtime,
    )
    del feat
    monkeypatch.setattr(dataset, "STREAM_CHUNK_BYTES", 1 << 20)
    full_bytes = configs * nc * 18 * 4

    def peak(fn) -> int:
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    validating = peak(lambda: validate_file(path))
    loading = peak(lambda: load_graph(path))
    assert loading > full_bytes  # the measurement sees numpy's buffers
    assert validating < full_bytes / 4, f"validation peaked at {validating / 1e6:.1f} MB"


# ---------------------------------------------------------------- tpuperf validate


def test_validate_cli_reports_each_bad_file_and_fails(tmp_path, write_graph, capsys) -> None:
    good = write_graph(tmp_path, TILE, "train", name="good")
    nan_feat = np.full((6, NODE_FEAT_DIM), np.nan, np.float32)
    bad_nan = write_graph(tmp_path, TILE, "train", name="nan", node_feat=nan_feat)
    bad_runtime = write_graph(tmp_path, LAYOUT, "valid", name="zero", config_runtime=np.zeros(4, np.int64))
    loose = write_graph(tmp_path, TILE, "test", name="loose").rename(tmp_path / "loose.npz")
    truncated = write_graph(tmp_path, LAYOUT, "test", name="cut")
    truncated.write_bytes(truncated.read_bytes()[:100])

    assert main(["validate", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    bad_lines = [line for line in lines if line.startswith("BAD ")]
    assert len(bad_lines) == 4
    for path, what in [
        (bad_nan, "node_feat: contains NaN"),
        (bad_runtime, "config_runtime: 4 non-positive runtimes in a valid file"),
        (loose, "cannot tell the collection"),
        (truncated, "unreadable or truncated archive"),
    ]:
        assert sum(line.startswith(f"BAD {path}: ") and what in line for line in bad_lines) == 1, what
    assert not any(str(good) in line for line in lines)
    assert lines[-1] == "5 files checked, 1 valid, 4 bad"


def test_validate_cli_passes_valid_files_and_directories(tmp_path, tiny_dataset, write_graph, capsys) -> None:
    single = write_graph(tmp_path / "other", LAYOUT, "valid")
    assert main(["validate", str(tiny_dataset), str(single)]) == 0
    assert capsys.readouterr().out.splitlines() == ["11 files checked, 11 valid, 0 bad"]


def test_validate_cli_missing_path_is_a_usage_error(tmp_path, capsys) -> None:
    assert main(["validate", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"tpuperf validate: {tmp_path / 'nowhere'}: no such file or directory\n"


def test_validate_cli_follows_symlinked_folders_and_refuses_an_empty_one(tmp_path, tiny_dataset, capsys) -> None:
    """A dataset assembled from links (`ln -s /data/npz mine/npz`) is checked whole; it used to be
    "0 files checked, 0 valid, 0 bad" and exit 0, as for a folder with no .npz, which now stops."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "npz").symlink_to(tiny_dataset / "npz")
    (tmp_path / "mine" / "npz_again").symlink_to(tmp_path / "mine")  # a link cycle is walked once
    assert main(["validate", str(tmp_path / "mine")]) == 0
    assert capsys.readouterr().out.splitlines() == ["10 files checked, 10 valid, 0 bad"]
    (tmp_path / "empty").mkdir()
    assert main(["validate", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err == f"tpuperf validate: {tmp_path / 'empty'}: no .npz files in it\n"


def test_a_symlinked_file_is_located_where_its_link_is_then_where_it_points(tmp_path, write_graph) -> None:
    """A dataset of links into a flat store (content-addressed blobs, DVC's symlink cache) is read
    by the links' place in the layout; a loose link into the layout by its target's place."""
    blob = tmp_path / "store" / "3f2a9c"
    blob.parent.mkdir()
    write_graph(tmp_path / "made", "layout:nlp:default", "valid", name="g").rename(blob)
    link = get_collection("layout:nlp:default").split_dir(tmp_path / "data", "valid") / "g.npz"
    link.parent.mkdir(parents=True)
    link.symlink_to(blob)
    assert locate(link) == (get_collection("layout:nlp:default"), "valid")
    assert locate(blob) == (None, None)
    validate_file(link)  # the collection and split come from the link: no "cannot tell the collection"
    loose = tmp_path / "prog.npz"
    loose.symlink_to(write_graph(tmp_path / "data", "tile:xla", "test", name="k"))
    assert locate(loose) == (get_collection("tile:xla"), "test")
