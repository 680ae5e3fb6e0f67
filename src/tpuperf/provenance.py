"""What code made an artifact: one hash of the tpuperf sources, shared by every artifact that records it.

Fold checkpoints (:mod:`tpuperf.training.trainer`), exported models (:mod:`tpuperf.ranking.export`)
and Kaggle kernel bundles (:mod:`tpuperf.kaggle.kernels`) carry :func:`source_fingerprint`, so an
artifact made by other code is never taken for the current one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def source_fingerprint(package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 (64 hex chars) over every ``.py`` file under ``package_dir`` (relative path + bytes, sorted by path).

    Any edit of the sources changes it, comments included: which edits cannot change a trained
    model is not decidable from the text, so every edit counts as a change.
    """
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py"), key=lambda p: p.relative_to(package_dir).as_posix()):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
