"""Atomic writers: all or nothing, and files/directories created with the user's umask."""

from __future__ import annotations

import json
import os

import numpy as np
import polars as pl
import pytest

from tpuperf.atomic import replaced_dir, write_atomic, write_json_atomic, write_text_atomic
from tpuperf.data.synthetic import write_dataset


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, "0o644", "0o755"), (0o077, "0o600", "0o700")])
def test_files_and_directories_follow_the_umask(tmp_path, umask, file_modes, mask, file_mode, dir_mode):
    umask(mask)
    write_text_atomic(tmp_path / "out" / "a.txt", "hello\n")
    write_json_atomic(tmp_path / "out" / "b.json", {"x": 1})
    write_atomic(tmp_path / "out" / "c.parquet", pl.DataFrame({"x": [1, 2]}).write_parquet)
    with replaced_dir(tmp_path / "pub") as stage:
        np.save(stage / "f.npy", np.arange(3))
    assert file_modes(tmp_path) == {file_mode}
    assert oct((tmp_path / "pub").stat().st_mode & 0o777) == dir_mode
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "b.json", "c.parquet"]  # no temp left
    assert json.loads((tmp_path / "out" / "b.json").read_text()) == {"x": 1}
    assert pl.read_parquet(tmp_path / "out" / "c.parquet")["x"].to_list() == [1, 2]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = write_text_atomic(tmp_path / "a.txt", "old\n")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("checker refused it")

    with pytest.raises(RuntimeError, match="checker refused it"):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_replaced_dir_replaces_whole_and_restores_on_failure(tmp_path, monkeypatch):
    final = tmp_path / "d"
    final.mkdir()
    (final / "stale.txt").write_text("stale")
    with replaced_dir(final) as stage:
        (stage / "new.txt").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # the old copy is gone

    with pytest.raises(RuntimeError, match="half built"):
        with replaced_dir(final) as stage:
            (stage / "half.txt").write_text("half")
            raise RuntimeError("half built")
    assert [p.name for p in final.iterdir()] == ["new.txt"]  # a failed block changes nothing
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # and leaves no staging directory

    real_rename = type(final).rename

    def refuse_staging(self, target):
        if self.name.startswith(".d.staging"):
            raise OSError("disk full")
        return real_rename(self, target)

    monkeypatch.setattr(type(final), "rename", refuse_staging)
    with pytest.raises(OSError, match="disk full"):
        with replaced_dir(final) as stage:
            (stage / "newer.txt").write_text("newer")
    assert [p.name for p in final.iterdir()] == ["new.txt"]  # the previous version is back in place
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


@pytest.mark.parametrize("mask, file_mode", [(0o022, "0o644"), (0o077, "0o600")])
def test_synthetic_dataset_follows_the_umask(tmp_path, umask, file_modes, mask, file_mode):
    umask(mask)
    write_dataset(tmp_path / "data", preset="tiny", seed=0)
    assert file_modes(tmp_path / "data") == {file_mode}
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_unserialisable_json_keeps_the_old_file(tmp_path):
    path = write_json_atomic(tmp_path / "new" / "x.json", {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]} and path.read_text().endswith("}\n")
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary left


def test_a_killed_writers_leftovers_go_at_the_next_write(tmp_path):
    """SIGKILL mid-`tpuperf preprocess` left its hidden staging directory (up to a cache's size) beside the cache,
    one more per kill, and mid-swap the moved-aside old cache; nothing removed them. The next write into that
    directory now removes those of writers no longer running, of any target there, and keeps a running writer's."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)  # a pid that has exited (not reused within this test, in practice)
    final = tmp_path / "cache" / "tile-xla"
    final.parent.mkdir()
    stale = [final.with_name(f".tile-xla.{tag}-{dead}-0123abcd") for tag in ("staging", "old")]
    for d in stale:
        (d / "train").mkdir(parents=True)
        (d / "train" / "g.npy").write_bytes(b"x" * 100)
    live = final.with_name(f".tile-xla.staging-{os.getpid()}-89abcdef")  # a concurrent writer still at work
    live.mkdir()
    other = final.with_name(f".tile-xla-other.staging-{dead}-0123abcd")  # another target's in the same directory
    other.mkdir()
    mine = final.with_name("tile-xla.staging-1-0123abcd")  # not a hidden name a writer makes: the user's
    mine.mkdir()
    with replaced_dir(final) as tmp:
        (tmp / "stats.json").write_text("{}")
    assert sorted(p.name for p in final.parent.iterdir()) == sorted(["tile-xla", live.name, mine.name])
    stale_file = tmp_path / f".report.json.tmp-{dead}-0123abcd"
    stale_file.write_text("{")
    write_json_atomic(tmp_path / "report.json", {"a": 1})
    assert not stale_file.exists() and json.loads((tmp_path / "report.json").read_text()) == {"a": 1}


def test_writing_many_files_into_one_directory_lists_it_once(tmp_path, monkeypatch):
    """Every write listed its directory for a killed writer's leftovers, so `tpuperf synth` writing n files into one
    directory took O(n^2) (benchmarks/atomic_writes.py). A process now lists a directory at its first write there;
    a leftover appearing later stays for the next run to remove."""
    import subprocess
    import sys

    listed = []
    for name in ("listdir", "scandir"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda path=".", real=real: listed.append(os.fspath(path)) or real(path))
    out = tmp_path / "npz"
    for i in range(20):
        write_text_atomic(out / f"{i}.txt", str(i))
    assert [p for p in listed if os.path.abspath(p) == str(out)] == [os.fspath(out)]
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    later = out / f".0.txt.tmp-{int(done.stdout)}-0123abcd"
    later.write_text("0")
    write_text_atomic(out / "0.txt", "again")
    assert later.exists() and len(listed) == 1


def test_atomic_writes_benchmark_times_each_write(tmp_path):
    """benchmarks/atomic_writes.py: one duration per file, every file written whole."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from atomic_writes import time_writes

    seconds = time_writes(tmp_path / "out", 30, 100)
    assert len(seconds) == 30 and all(s > 0 for s in seconds)
    assert sorted(p.stat().st_size for p in (tmp_path / "out").iterdir()) == [100] * 30
