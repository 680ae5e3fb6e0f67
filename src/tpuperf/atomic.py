"""Atomic writes of files and directories that honour the user's umask.

Every output of the pipeline (cache, checkpoints state, predictions, metrics, submissions,
datasets, kernel folders) is written next to its target and renamed into place, so a kill or
an error never leaves a half-written file or directory; what a SIGKILL leaves beside it is removed by the next
process's first write into that directory (:func:`remove_stale_leftovers`). Temp files are created with a plain
``open`` (mode 0666 minus the umask) rather than :func:`tempfile.mkstemp` (always 0600,
which ``os.replace`` would carry to the published file); staging directories likewise with
``mkdir`` (0777 minus the umask) rather than :func:`tempfile.mkdtemp` (0700).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _sibling(path: Path, tag: str) -> Path:
    """A fresh hidden name beside ``path`` (pid + random suffix: concurrent writers never collide)."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# what _sibling names: .<target>.<tag>-<pid>-<8 hex>
_LEFTOVER = re.compile(r"\..+\.(?:tmp|staging|old)-(\d+)-[0-9a-f]{8}")
# the directories (absolute paths) remove_stale_leftovers has listed in this process
_cleaned: set[str] = set()


def remove_stale_leftovers(directory: Path) -> list[Path]:
    """Delete what writers killed outright (SIGKILL, OOM killer) left in ``directory``: the hidden temp files,
    staging and moved-aside directories :func:`_sibling` names, of any target there, whose process no longer runs.
    A killed ``preprocess`` leaves a staging directory of up to the cache's size, one per kill. Each process lists a
    directory once, at its first write there (later calls return at once): listing it at every write made writing
    n files into one directory O(n^2) (``python benchmarks/atomic_writes.py``), and what a writer leaves when it
    is killed is the next run's to remove. Writers still running on this host keep theirs; the pid is this host's,
    so writers of one directory on several hosts or in containers with their own pid namespaces are not supported
    (a removed live writer's publish then fails: FileNotFoundError). Returns the paths removed."""
    key = os.path.abspath(directory)
    if key in _cleaned:
        return []
    _cleaned.add(key)
    removed = []
    for stale in [Path(directory, name) for name in os.listdir(directory)]:
        match = _LEFTOVER.fullmatch(stale.name)
        if match is None or _running(int(match[1])):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def write_atomic(path: Path | str, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` to create a temp file beside ``path``, fsync it and rename it to ``path``.

    ``write`` receives the temp path (which does not exist yet) and must create it, e.g.
    ``frame.write_parquet``; it may also check what it wrote and raise to refuse it. On any
    exception the temp file is removed and ``path`` is left as it was. Creates the parent
    directory. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_leftovers(path.parent)
    tmp = _sibling(path, "tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`write_atomic`)."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: Path | str, payload: Any, indent: int = 2, sort_keys: bool = False) -> Path:
    """Write ``payload`` as JSON (plus a final newline) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=indent, sort_keys=sort_keys) + "\n")


@contextmanager
def replaced_dir(final: Path | str) -> Iterator[Path]:
    """Build a directory that replaces ``final`` whole, or not at all.

    Yields an empty hidden staging directory beside ``final`` (umask-honouring mode) to fill;
    when the block succeeds it is published with :func:`publish_dir`, when the block raises it
    is removed and ``final`` stays as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_leftovers(final.parent)
    staging = _sibling(final, "staging")
    staging.mkdir()
    try:
        yield staging
        publish_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish_dir(staging: Path | str, final: Path | str) -> Path:
    """Put the directory ``staging`` at ``final``, replacing what is there.

    The previous ``final`` (a directory, file or symlink) is moved aside first and deleted
    only once ``staging`` is in place; if the swap fails it is moved back, so ``final`` is
    never missing nor half-replaced. Returns ``final``.
    """
    staging, final = Path(staging), Path(final)
    if not (final.exists() or final.is_symlink()):
        staging.rename(final)
        return final
    old = _sibling(final, "old")
    final.rename(old)
    try:
        staging.rename(final)
    except BaseException:
        old.rename(final)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()
    return final
