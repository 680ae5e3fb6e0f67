"""Combine every collection's fold predictions into submissions/submission.csv (the last DVC stage).

    python ensemble.py [--params params.yaml] [--split test|valid] [--out PATH]

The same as ``tpuperf ensemble`` (what dvc.yaml runs), kept as a script entry point.
``--split valid`` writes submissions/valid_submission.csv instead, for
``tpuperf score submissions/valid_submission.csv --data data/raw --split valid``.
How folds and models are combined: src/tpuperf/submission/ensemble.py.
"""

from __future__ import annotations

import sys

from tpuperf.cli import main as tpuperf


def main(argv: list[str] | None = None) -> int:
    return tpuperf(["ensemble", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
