"""What made an artifact: one hash of the tpuperf sources, shared by every artifact that records it, and what
trained weights were trained for.

Fold checkpoints (:mod:`tpuperf.training.trainer`), exported models (:mod:`tpuperf.ranking.export`)
and Kaggle kernel bundles (:mod:`tpuperf.kaggle.kernels`) carry :func:`source_fingerprint`, so an
artifact made by other code is never taken for the current one. Fold checkpoints also record
:func:`weights_provenance`, which the export requires of every checkpoint it packages.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tpuperf.data.cache import CollectionCache

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


def weights_provenance(
    model: Mapping[str, Any], stats: Mapping[str, Any], train_hashes: Mapping[str, str], code: str
) -> str:
    """What trained weights mean, as sha256 (64 hex chars): the model's settings (``models.<name>`` merged with
    ``model_base``, as a dict), the cache's stats.json without where its files came from (feature transform, pruning;
    :attr:`tpuperf.data.cache.CollectionCache.fitted_stats`), the content hash of every
    train graph (``{graph_id: hash}``, :class:`tpuperf.data.cache.ContentHash`) and the sources (``code``,
    :func:`source_fingerprint`). Equal values: the weights fit this cache's transform and these settings.
    """
    payload = json.dumps([dict(model), dict(stats), dict(train_hashes), code], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def weights_for_cache(model: Mapping[str, Any], cache: CollectionCache) -> str:
    """:func:`weights_provenance` of weights of ``model`` (``models.<name>`` merged with ``model_base``, as a dict)
    trained on ``cache``'s train graphs by the current sources: what a fold's state.json records
    (tpuperf.training.trainer) and ``tpuperf export`` requires (tpuperf.ranking.export)."""
    return weights_provenance(model, cache.fitted_stats, cache.content_hashes("train"), source_fingerprint())
