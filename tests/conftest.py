"""Shared fixtures: the real TpuGraphs files (when present), tiny valid files in the real layout, and
params variants built from the repo's params.yaml without editing it."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tpuperf.collection import COLLECTIONS, get_collection
from tpuperf.config import Config, ModelConfig, deep_merge, load_params, parse

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ABSENT_REASON = f"real TpuGraphs files not available ({SHARED_DATA} is absent)"
REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def params_with(changes: dict) -> dict:
    """The repo's params.yaml as a new dict with ``changes`` deep-merged in (tpuperf.config.deep_merge)."""
    return deep_merge(load_params(REPO_PARAMS), changes)


def config_with(changes: dict) -> Config:
    """:func:`params_with` validated into a Config."""
    return Config.from_dict(params_with(changes))


# a small model section for layer tests: RankingModel's own argument defaults, 8 units, 1 + 1 layers
SMALL_MODEL = dict(
    conv="chebsage",
    units=8,
    config_units=None,
    shared_layers=1,
    config_layers=1,
    cheb_order=3,
    opcode_vocab=128,
    opcode_dim=16,
    dropout=0.0,
    readout="mean",
    config_interaction=0,
    config_operands=False,
    layout_cost_features=False,
    config_attention=0,
    attention_heads=1,
    config_scope={"tile": "nodes", "layout": "nodes"},
    tile_features=False,
)


def model_config(**fields) -> ModelConfig:
    """:data:`SMALL_MODEL` with ``fields`` replaced, checked like a models.<name> section."""
    return parse(ModelConfig, {**SMALL_MODEL, **fields}, "models.test", "tests/conftest.py")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test asking for ``real_npz`` runs once per real file, or is skipped saying why."""
    if "real_npz" not in metafunc.fixturenames:
        return
    root = SHARED_DATA / "npz"
    files = sorted(root.rglob("*.npz")) if root.is_dir() else []
    if files:
        metafunc.parametrize("real_npz", files, ids=[str(f.relative_to(root)) for f in files])
    else:
        metafunc.parametrize("real_npz", [pytest.param(None, marks=pytest.mark.skip(reason=ABSENT_REASON))])


def put_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, script: str) -> Path:
    """Write an executable ``name`` into ``tmp_path/bin`` and put that folder first on PATH.

    How the tests stand in for the kaggle CLI, which cannot reach Kaggle here.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / name
    exe.write_text(script)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return exe


@pytest.fixture
def shared_data() -> Path:
    """The directory of real files (npz/..., sample_submission.csv)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(ABSENT_REASON)
    return SHARED_DATA


def graph_arrays(collection: str, split: str, seed: int = 0, nodes: int = 6, configs: int = 4) -> dict[str, np.ndarray]:
    """The arrays of one small valid file, with the real files' dtypes.

    Test splits get zero runtimes (and unit normalisers for tile), as in the competition.
    """
    rng = np.random.default_rng(seed)
    col = get_collection(collection)
    edges = np.array([(u, v) for u in range(1, nodes) for v in (u - 1,)], np.int64)
    arrays = {
        "node_feat": rng.normal(size=(nodes, 140)).astype(np.float32),
        "node_opcode": rng.integers(0, 121, size=nodes).astype(np.uint8),
        "edge_index": edges,
    }
    runtime = rng.integers(1_000, 100_000, size=configs).astype(np.int64)
    if col.is_tile:
        normalizers = rng.integers(500, 1_000, size=configs).astype(np.int64)
        arrays["config_feat"] = rng.integers(0, 64, size=(configs, 24)).astype(np.float32)
        arrays["config_runtime_normalizers"] = np.ones(configs, np.int64) if split == "test" else normalizers
    else:
        ids = np.array([1, nodes - 2], np.int64)
        arrays["node_config_ids"] = ids
        arrays["node_config_feat"] = rng.integers(-1, 6, size=(configs, len(ids), 18)).astype(np.float32)
        arrays["node_splits"] = np.array([[0, nodes // 2]], np.int64)
    arrays["config_runtime"] = np.zeros(configs, np.int64) if split == "test" else runtime
    return arrays


def _write_graph(root: Path, collection: str, split: str, name: str = "g", seed: int = 0, **arrays: np.ndarray) -> Path:
    """Write a valid small file at its real-layout place under ``root``; ``arrays`` replace fields."""
    path = get_collection(collection).split_dir(root, split) / f"{name}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{**graph_arrays(collection, split, seed), **arrays})
    return path


def _rewrite_npz(path: Path, drop: tuple[str, ...] = (), **changes: np.ndarray) -> Path:
    """Rewrite one or more arrays of an existing file in place, keeping the others as they are."""
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in drop}
    arrays.update(changes)
    np.savez_compressed(path, **arrays)
    return path


def _write_tiny_dataset(root: Path) -> None:
    """A complete tiny dataset: one train and one test file per collection, plus a sample submission."""
    rows = []
    for i, col in enumerate(COLLECTIONS):
        _write_graph(root, col.name, "train", name=f"train{i}", seed=i)
        _write_graph(root, col.name, "test", name=f"test{i}", seed=100 + i)
        rows.append(f"{col.submission_id(f'test{i}')},0;1;2;3")  # graph_arrays makes 4 configs
    (root / "sample_submission.csv").write_text("ID,TopConfigs\n" + "\n".join(rows) + "\n")


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A tiny valid dataset directory in the real layout."""
    root = tmp_path / "tiny"
    _write_tiny_dataset(root)
    return root


@pytest.fixture
def write_graph() -> Callable[..., Path]:
    """``write_graph(root, collection, split, name="g", seed=0, **arrays) -> Path``."""
    return _write_graph


@pytest.fixture
def rewrite_npz() -> Callable[..., Path]:
    """``rewrite_npz(path, drop=(), **arrays) -> Path``."""
    return _rewrite_npz


@pytest.fixture
def umask() -> Callable[[int], int]:
    """``umask(mask)`` sets the process umask for the rest of the test (the old one is restored)."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.fixture
def file_modes() -> Callable[[Path], set[str]]:
    """``file_modes(root) -> {"0o644", ...}``: the permission bits of every file under ``root``."""
    return lambda root: {oct(p.stat().st_mode & 0o777) for p in Path(root).rglob("*") if p.is_file()}
