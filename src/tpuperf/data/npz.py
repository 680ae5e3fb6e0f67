"""Read and validate one TpuGraphs ``.npz`` file of any collection.

Validation reads each array's ``.npy`` header from the zip member (a few hundred bytes)
to check keys, ranks, shapes and dtypes, and streams the float arrays in chunks to look
for NaN/inf, so a multi-GB ``node_config_feat`` is never materialised just to be checked.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tpuperf.collection import LAYOUT, TILE, Collection, Kind, locate
from tpuperf.errors import TpuperfError

NODE_FEAT_DIM = 140
TILE_CONFIG_DIM = 24
LAYOUT_CONFIG_DIM = 18
LAYOUT_VALUE_RANGE = (-1, 5)  # node_config_feat minor-to-major entries: -1 = unused dim, else a dim index 0..5
STREAM_CHUNK_BYTES = 64 << 20
# node_feat columns (TpuGraphs dataset README): 0 is_root; 21-26 the output's dims (0 past the rank),
# 27 their sum, 28 their product (1 for a scalar or tuple); 134-139 its minor-to-major layout (0 past
# the rank).
COL_IS_ROOT, COL_DIMS, COL_DIM_SUM, COL_DIM_PROD, COL_LAYOUT, MAX_RANK = 0, 21, 27, 28, 134, 6
# node_feat columns 2-20: one-hot of the HLO output's element type, in this order. Inferred from the
# real files (by the ops that carry each column: compare outputs col 3 = pred, iota col 6 = s32,
# shift-right-logical col 10 = u32, most ops col 13 = f32, unet3d's convolutions col 15 = bf16,
# tuples col 18, after-all col 20 = token): XLA's primitive types grouped by kind.
COL_ELEMENT_TYPE = 2
ELEMENT_TYPES = (
    "invalid", "pred", "s8", "s16", "s32", "s64", "u8", "u16", "u32", "u64",
    "f16", "f32", "f64", "bf16", "c64", "c128", "tuple", "opaque", "token",
)  # fmt: skip
ELEMENT_BYTES = np.array([0, 1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 4, 8, 2, 8, 16, 0, 0, 0], np.int32)  # per ELEMENT_TYPES

# field -> (dtype kind: "f" float / "i" integer, rank (or the ranks allowed), fixed trailing dims or None)
COMMON_FIELDS = {
    "node_feat": ("f", 2, (NODE_FEAT_DIM,)),
    "node_opcode": ("i", 1, ()),
    "edge_index": ("i", 2, (2,)),
    "config_runtime": ("i", 1, ()),
}
TILE_FIELDS = {
    "config_feat": ("f", 2, (TILE_CONFIG_DIM,)),
    "config_runtime_normalizers": ("i", 1, ()),
}
LAYOUT_FIELDS = {
    "node_config_ids": ("i", 1, ()),
    "node_config_feat": ("f", 3, (None, LAYOUT_CONFIG_DIM)),
}
# the arrays one kind's files hold besides COMMON_FIELDS
KIND_FIELDS = {TILE: TILE_FIELDS, LAYOUT: LAYOUT_FIELDS}
# what a file without measurements stands for when runtimes may be absent (load_graph(runtimes_optional=True),
# `tpuperf rank` of a new program): runtimes unknown (0, as in test files), normalisers 1 (as in tile test files)
ABSENT_RUNTIMES = {"config_runtime": 0, "config_runtime_normalizers": 1}
# node_splits is a segmentation hint the pipeline does not use: the real files store it (1, k), the
# official dataset README describes it (k,); either, or none, is accepted.
OPTIONAL_LAYOUT_FIELDS = {"node_splits": ("i", (1, 2), ())}


class DataFormatError(TpuperfError, ValueError):
    """A TpuGraphs file that cannot be used, naming the file, the field and the problem."""

    def __init__(self, path: Path | str, field: str | None, problem: str):
        self.path, self.field, self.problem = Path(path), field, problem
        where = f"{self.path}: {field}" if field else str(self.path)
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class ArrayInfo:
    """Shape and dtype of one array in an .npz, read from its header only."""

    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass
class TileGraph:
    """One fused kernel of ``tile:xla``; configurations are per graph."""

    graph_id: str
    node_feat: np.ndarray  # (n, 140) float32
    node_opcode: np.ndarray  # (n,) int
    edge_index: np.ndarray  # (m, 2): row [u, v] = u consumes v's output
    config_feat: np.ndarray  # (c, 24) float32
    config_runtime: np.ndarray  # (c,) int64 ns, zero in test files
    config_runtime_normalizers: np.ndarray  # (c,) int64

    @property
    def num_configs(self) -> int:
        return len(self.config_runtime)

    @property
    def target(self) -> np.ndarray:
        """Runtime divided by its normaliser: what the tile metric compares."""
        return self.config_runtime / self.config_runtime_normalizers


@dataclass
class LayoutGraph:
    """One HLO program of a ``layout:*`` collection; configurations are per configurable node."""

    graph_id: str
    node_feat: np.ndarray
    node_opcode: np.ndarray
    edge_index: np.ndarray
    node_config_ids: np.ndarray  # (nc,) ids of configurable nodes
    node_config_feat: np.ndarray | None  # (c, nc, 18); None when read with load_configs=False
    config_runtime: np.ndarray  # (c,)
    node_splits: np.ndarray | None = None  # (1, k) or (k,) as stored; None when absent (unused hint)

    @property
    def num_configs(self) -> int:
        return len(self.config_runtime)

    @property
    def target(self) -> np.ndarray:
        return self.config_runtime.astype(np.float64)


Graph = TileGraph | LayoutGraph


def _read_npy_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)


def read_header(path: Path | str) -> dict[str, ArrayInfo]:
    """Shapes and dtypes of every array in an .npz without decompressing their data."""
    path = Path(path)
    infos = {}
    key = None  # the member being read, so that a corrupt one is named
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                key = name[: -len(".npy")]
                with zf.open(name) as fh:
                    shape, _fortran, dtype = _read_npy_header(fh)
                infos[key] = ArrayInfo(tuple(shape), np.dtype(dtype))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
        raise DataFormatError(path, key, f"unreadable or truncated archive ({exc})") from exc
    return infos


def iter_chunks(path: Path | str, key: str, max_bytes: int | None = None) -> Iterator[np.ndarray]:
    """Stream an array of an .npz along its first axis in chunks of about ``max_bytes``
    (default :data:`STREAM_CHUNK_BYTES`, read at call time).

    Memory stays bounded by the chunk size whatever the array's size; this is how big
    layout files' ``node_config_feat`` are checked and preprocessed. An array with no rows
    yields one empty chunk, so callers always get at least one.
    """
    path = Path(path)
    max_bytes = max_bytes or STREAM_CHUNK_BYTES
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fh:
            shape, fortran, dtype = _read_npy_header(fh)
            dtype = np.dtype(dtype)
            if fortran and len(shape) > 1:
                # Column-major data cannot be cut into rows while streaming; the real files
                # store only the small edge_index this way, so it is read whole.
                yield _exact_array(path, key, fh.read(), shape, dtype, order="F")
                return
            row_items = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
            row_bytes = max(row_items * dtype.itemsize, 1)
            rows_per_chunk = max(1, max_bytes // row_bytes)
            remaining = shape[0] if shape else 1
            if remaining == 0:
                yield np.empty(shape, dtype)
            while remaining > 0:
                rows = min(rows_per_chunk, remaining)
                yield _exact_array(path, key, fh.read(rows * row_bytes), (rows, *shape[1:]), dtype)
                remaining -= rows
    except KeyError as exc:
        raise DataFormatError(path, key, "missing key") from exc
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(path, key, f"unreadable or truncated archive ({exc})") from exc


def _exact_array(path: Path, key: str, buf: bytes, shape: tuple, dtype: np.dtype, order: str = "C") -> np.ndarray:
    want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(buf) != want:
        raise DataFormatError(path, key, f"array data is truncated ({len(buf)} of {want} bytes)")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def _load_array(path: Path, key: str) -> np.ndarray:
    chunks = list(iter_chunks(path, key))
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def _check_header(path: Path, infos: dict[str, ArrayInfo], fields: dict, required: bool) -> None:
    for field, (kind, rank, trailing) in fields.items():
        if field not in infos:
            if required:
                raise DataFormatError(path, field, "missing key")
            continue
        info = infos[field]
        kind_ok = info.dtype.kind in ("u", "i") if kind == "i" else info.dtype.kind == "f"
        if not kind_ok:
            want = "integer" if kind == "i" else "floating-point"
            raise DataFormatError(path, field, f"dtype {info.dtype} is not {want}")
        ranks = rank if isinstance(rank, tuple) else (rank,)
        if len(info.shape) not in ranks:
            expected = " or ".join(map(str, ranks))
            raise DataFormatError(path, field, f"rank {len(info.shape)} (shape {info.shape}), expected rank {expected}")
        for axis, want in enumerate(trailing, start=len(info.shape) - len(trailing)):
            if want is not None and info.shape[axis] != want:
                raise DataFormatError(path, field, f"shape {info.shape}: axis {axis} should be {want}")


def _check_sizes(path: Path, infos: dict[str, ArrayInfo], kind: Kind) -> None:
    n = infos["node_feat"].shape[0]
    if n == 0:
        raise DataFormatError(path, "node_feat", "graph has no nodes")
    if infos["node_opcode"].shape[0] != n:
        raise DataFormatError(path, "node_opcode", f"{infos['node_opcode'].shape[0]} opcodes for {n} nodes")
    c = infos["config_runtime"].shape[0]
    if c == 0:
        raise DataFormatError(path, "config_runtime", "zero configurations")
    config_key = "node_config_feat" if kind.config_per_node else "config_feat"
    if infos[config_key].shape[0] != c:
        raise DataFormatError(
            path, config_key, f"{infos[config_key].shape[0]} configurations but config_runtime has {c}"
        )
    if not kind.config_per_node:
        if infos["config_runtime_normalizers"].shape[0] != c:
            raise DataFormatError(
                path,
                "config_runtime_normalizers",
                f"length {infos['config_runtime_normalizers'].shape[0]}, expected {c}",
            )
    else:
        nc = infos["node_config_ids"].shape[0]
        if infos["node_config_feat"].shape[1] != nc:
            raise DataFormatError(
                path,
                "node_config_feat",
                f"{infos['node_config_feat'].shape[1]} configurable nodes but node_config_ids has {nc}",
            )
        if nc == 0:
            raise DataFormatError(path, "node_config_ids", "no configurable nodes")


def _check_finite(path: Path, key: str, chunks: Iterator[np.ndarray]) -> None:
    """No NaN or inf, and (a wider float) no value beyond float32's range: the pipeline reads features as float32."""
    limit = np.finfo(np.float32).max
    for chunk in chunks:
        if not np.isfinite(chunk).all():
            bad = "NaN" if np.isnan(chunk).any() else "inf"
            raise DataFormatError(path, key, f"contains {bad}")
        wide = np.abs(chunk) > limit
        if wide.any():
            raise DataFormatError(path, key, f"value {chunk[wide].flat[0]:g} is beyond float32's range")


def layout_codes(path: Path | str, chunk: np.ndarray) -> np.ndarray:
    """Finite ``node_config_feat`` values (any shape) as int8; :class:`DataFormatError` naming the first value that
    is not an integer in :data:`LAYOUT_VALUE_RANGE`."""
    codes = chunk.astype(np.int8)
    lo, hi = LAYOUT_VALUE_RANGE
    if not np.array_equal(codes, chunk) or codes.min(initial=lo) < lo or codes.max(initial=hi) > hi:
        bad = chunk[(chunk != codes) | (codes < lo) | (codes > hi)]
        raise DataFormatError(path, "node_config_feat", f"value {bad.flat[0]} is not an integer in {lo}..{hi}")
    return codes


def _check_ids(path: Path, key: str, ids: np.ndarray, n: int) -> None:
    """Ids must lie in 0..n-1 (``node_splits`` passes n + 1: its boundaries may equal n)."""
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise DataFormatError(path, key, f"ids range {ids.min()}..{ids.max()} outside 0..{n - 1}")


def _absent_runtimes(infos: dict[str, ArrayInfo], kind: Kind) -> dict[str, np.ndarray]:
    """The :data:`ABSENT_RUNTIMES` arrays a file lacks, sized by its config array (also entered in
    ``infos``); none when that array is missing too (the header check then names it)."""
    config_key = "node_config_feat" if kind.config_per_node else "config_feat"
    if config_key not in infos or not infos[config_key].shape:
        return {}
    c = infos[config_key].shape[0]
    keys = ["config_runtime"] + ([] if kind.config_per_node else ["config_runtime_normalizers"])
    absent = {k: np.full(c, ABSENT_RUNTIMES[k], np.int64) for k in keys if k not in infos}
    infos.update({k: ArrayInfo(a.shape, a.dtype) for k, a in absent.items()})
    return absent


def _resolve(path: Path, collection: Collection | None, split: str | None) -> tuple[Collection, str | None]:
    found_col, found_split = locate(path)
    collection = collection or found_col
    if collection is None:
        raise DataFormatError(path, None, "cannot tell the collection from the path (pass it explicitly)")
    return collection, split or found_split


def load_graph(
    path: Path | str,
    collection: Collection | None = None,
    split: str | None = None,
    *,
    load_configs: bool = True,
    runtimes_optional: bool = False,
) -> Graph:
    """Read and fully validate one file; returns a :class:`TileGraph` or :class:`LayoutGraph`.

    ``collection`` and ``split`` are inferred from a path in the real layout when omitted.
    ``split`` decides whether runtimes must be positive (test files hold zeros).
    ``load_configs=False`` leaves a layout file's ``node_config_feat`` on disk (still checked,
    by streaming) so big graphs can be processed chunk by chunk with :func:`iter_chunks`.
    ``runtimes_optional=True`` (a new program to rank: nothing measured) accepts a file without
    ``config_runtime`` / ``config_runtime_normalizers`` and fills them as :data:`ABSENT_RUNTIMES`
    (int64, one per configuration); with ``split`` "train" or "valid" the zeros are then refused. A zero
    normaliser of a config whose runtime is zero (unmeasured) is then read as the absent one (1).

    Arrays the format does not define (other keys) are neither read nor checked. Opcode ids must fit int32 and
    float values float32 (what the pipeline converts them to).
    """
    path = Path(path)
    collection, split = _resolve(path, collection, split)
    infos = read_header(path)
    absent = _absent_runtimes(infos, collection.kind) if runtimes_optional else {}
    _check_header(path, infos, COMMON_FIELDS, required=True)
    _check_header(path, infos, KIND_FIELDS[collection.kind], required=True)
    if collection.kind.config_per_node:
        _check_header(path, infos, OPTIONAL_LAYOUT_FIELDS, required=False)
    _check_sizes(path, infos, collection.kind)

    arrays = {}
    known = {**COMMON_FIELDS, **KIND_FIELDS[collection.kind], **OPTIONAL_LAYOUT_FIELDS}
    small_keys = [k for k in infos if k in known and k != "node_config_feat"]
    for key in small_keys:
        arrays[key] = absent[key] if key in absent else _load_array(path, key)
        if arrays[key].dtype.kind == "f":
            _check_finite(path, key, iter([arrays[key]]))
    n = len(arrays["node_feat"])
    _check_ids(path, "edge_index", arrays["edge_index"], n)
    if arrays["node_opcode"].min() < 0:
        raise DataFormatError(path, "node_opcode", "negative opcode ids")
    if arrays["node_opcode"].max() > np.iinfo(np.int32).max:
        raise DataFormatError(path, "node_opcode", f"opcode id {arrays['node_opcode'].max()} does not fit int32")
    runtime = arrays["config_runtime"]
    if split in ("train", "valid") and (runtime <= 0).any():
        raise DataFormatError(
            path, "config_runtime", f"{int((runtime <= 0).sum())} non-positive runtimes in a {split} file"
        )
    if (runtime < 0).any():
        raise DataFormatError(path, "config_runtime", "negative runtimes")

    graph_id = path.stem
    if not collection.kind.config_per_node:
        norm = arrays["config_runtime_normalizers"]
        if runtimes_optional and (norm == 0).any():
            if (runtime[norm == 0] != 0).any():
                raise DataFormatError(
                    path,
                    "config_runtime_normalizers",
                    f"{int((runtime[norm == 0] != 0).sum())} non-positive normalisers beside measured runtimes",
                )
            norm = np.where(norm == 0, ABSENT_RUNTIMES["config_runtime_normalizers"], norm)
        if (norm <= 0).any():
            raise DataFormatError(path, "config_runtime_normalizers", "non-positive normalisers")
        return TileGraph(
            graph_id,
            arrays["node_feat"],
            arrays["node_opcode"],
            arrays["edge_index"],
            arrays["config_feat"],
            runtime,
            norm,
        )

    _check_ids(path, "node_config_ids", arrays["node_config_ids"], n)
    ids, counts = np.unique(arrays["node_config_ids"], return_counts=True)
    if (counts > 1).any():  # two config slots for one node: which one a layout applies to is undefined
        raise DataFormatError(path, "node_config_ids", f"repeats node ids {ids[counts > 1][:5].tolist()}")
    if "node_splits" in arrays:
        _check_ids(path, "node_splits", arrays["node_splits"], n + 1)
    config_feat = _load_array(path, "node_config_feat") if load_configs else None
    for chunk in [config_feat] if load_configs else iter_chunks(path, "node_config_feat"):
        _check_finite(path, "node_config_feat", iter([chunk]))
        layout_codes(path, chunk)  # minor-to-major dim indices: what preprocess and rank read them as
    return LayoutGraph(
        graph_id,
        arrays["node_feat"],
        arrays["node_opcode"],
        arrays["edge_index"],
        arrays["node_config_ids"],
        config_feat,
        runtime,
        arrays.get("node_splits"),
    )


def validate_file(path: Path | str, collection: Collection | None = None, split: str | None = None) -> None:
    """Raise :class:`DataFormatError` when a file is unusable; bounded memory for any size."""
    load_graph(path, collection, split, load_configs=False)


def walk_files(root: Path | str) -> list[Path]:
    """Every file under the directory ``root``, recursively, sorted; symlinked folders and files are
    followed (a dataset assembled from links is read whole), each real folder once (no link cycle)."""
    seen: set[str] = set()
    found: list[Path] = []
    for dirpath, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        found += [Path(dirpath, name) for name in names]  # a broken link too: its reader then names it
    return sorted(found)


def find_npz(paths: list[Path | str]) -> list[Path]:
    """Every .npz named or found (recursively, :func:`walk_files`) under the given files and
    directories, sorted per argument. FileNotFoundError for a path that does not exist or a
    directory holding no .npz (rather than checking nothing and reporting success)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = [f for f in walk_files(p) if f.suffix == ".npz"]
            if not files:
                raise FileNotFoundError(f"{p}: no .npz files in it")
            found.extend(files)
        elif p.exists():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return found


def validate_paths(paths: list[Path | str]) -> tuple[int, list[DataFormatError]]:
    """Validate every .npz under ``paths``; returns (number of files, errors)."""
    files = find_npz(paths)
    errors = []
    for f in files:
        try:
            validate_file(f)
        except DataFormatError as exc:
            errors.append(exc)
    return len(files), errors
