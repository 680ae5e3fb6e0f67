"""Combine every collection's fold predictions into submissions/submission.csv (the last DVC stage).

    python ensemble.py [--params params.yaml] [--split test|valid] [--out PATH]

``--split valid`` writes submissions/valid_submission.csv instead, for
``tpuperf score submissions/valid_submission.csv --data data/raw --split valid``.
How folds and models are combined: src/tpuperf/submission/ensemble.py.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tpuperf.config import load_params
from tpuperf.submission.ensemble import EnsembleError, EnsembleSettings, run_ensemble
from tpuperf.submission.csv import PredictionFormatError, SubmissionError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split", choices=("test", "valid"), default="test", help="which split's rows to write")
    parser.add_argument("--out", type=Path, help="CSV path (default: <ensemble.out>/submission.csv or valid_submission.csv)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_ensemble(EnsembleSettings.from_params(load_params(args.params)), split=args.split, out=args.out)
    except (FileNotFoundError, EnsembleError, PredictionFormatError, SubmissionError) as exc:
        print(f"ensemble failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
