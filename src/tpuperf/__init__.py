"""tpuperf: rank XLA compiler configurations of TPU programs (TpuGraphs).

tensorflow-gnn 1.0.x cannot host Keras 3 layers, so the legacy Keras 2 (tf-keras) must be
selected before ``tf.keras`` is first accessed (TensorFlow reads TF_USE_LEGACY_KERAS then, not at
``import tensorflow``). Importing any tpuperf module runs this first, so users never have to.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def rank(files, model, collection=None, top=None, members="all"):
    """Rank the configurations of TpuGraphs ``.npz`` files with an exported model, fastest first.

    Same as ``tpuperf rank``; see :func:`tpuperf.ranking.ranker.rank` for arguments, return value
    (a list of :class:`tpuperf.ranking.ranker.Ranking`) and errors. TensorFlow is imported on first use.
    """
    from tpuperf.ranking.ranker import rank as _rank

    return _rank(files, model, collection=collection, top=top, members=members)
