"""The ``tpuperf`` command. Each subcommand is a thin wrapper over a library function;
DVC stages call these same subcommands. Heavy modules (TensorFlow) are imported inside the
handlers so that light commands such as ``validate`` start fast."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _validate(args: argparse.Namespace) -> int:
    from tpuperf.dataset import validate_paths

    count, errors = validate_paths(args.paths)
    for err in errors:
        print(f"BAD {err}")
    print(f"{count} files checked, {count - len(errors)} valid, {len(errors)} bad")
    return 1 if errors else 0


def _preprocess(args: argparse.Namespace) -> int:
    import logging

    from tpuperf.collection import get_collection
    from tpuperf.config import load_params, section
    from tpuperf.dataset import DataFormatError
    from tpuperf.preprocess import PreprocessError, PreprocessSettings, preprocess_collection

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    params = load_params(args.params)
    settings = PreprocessSettings.from_params(params)
    try:
        preprocess_collection(
            section(params, "data")["out"], section(params, "preprocess")["out"], get_collection(args.collection), settings
        )
    except (DataFormatError, PreprocessError) as exc:
        print(f"preprocess failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _download(args: argparse.Namespace) -> int:
    from tpuperf.config import load_params, section
    from tpuperf.download import DataParams, DownloadError, download

    try:
        download(DataParams.from_section(section(load_params(args.params), "data")))
    except DownloadError as exc:
        print(f"tpuperf download failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _train(args: argparse.Namespace) -> int:
    from tpuperf.cache import CacheError
    from tpuperf.config import load_params
    from tpuperf.train import TrainingError, train_collection

    try:
        train_collection(args.collection, args.model, load_params(args.params))
    except (CacheError, TrainingError, KeyError) as exc:
        print(f"tpuperf train failed: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tpuperf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check TpuGraphs .npz files (files or directories, recursive)")
    p.add_argument("paths", nargs="+", type=Path)
    p.set_defaults(func=_validate)

    p = sub.add_parser("download", help="put the dataset + manifest.json at data.out (params: data.*)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_download)

    p = sub.add_parser("preprocess", help="build cache/<collection>/ from the downloaded data (params: preprocess.*, data.out)")
    p.add_argument("--collection", required=True, help="e.g. layout:nlp:random or layout-nlp-random")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_preprocess)

    p = sub.add_parser("train", help="k-fold training of one model on one collection (params: train.*, models.*)")
    p.add_argument("--collection", required=True, help="e.g. layout:nlp:random or layout-nlp-random")
    p.add_argument("--model", required=True, help="a key of models in params.yaml, e.g. chebsage")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func=_train)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
