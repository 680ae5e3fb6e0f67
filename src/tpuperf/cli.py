"""The ``tpuperf`` command. Each subcommand is a thin wrapper over a library function;
DVC stages call these same subcommands. Heavy modules (TensorFlow) are imported inside the
handlers so that light commands such as ``validate`` start fast. Errors become exit codes here
only, in :func:`main` (:mod:`tpuperf.errors`)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from tpuperf.errors import EXPECTED, UsageError, storage_error

DESCRIPTION = """\
Rank the XLA compiler configurations of TPU programs (TpuGraphs .npz graphs) by predicted
runtime, with graph neural networks trained on measured runtimes.

The pipeline (each step a DVC stage; `dvc repro` runs them all, settings in params.yaml):
  download -> preprocess -> train (k folds per collection x model) -> ensemble (submission.csv)
  -> export (a self-contained model) -> rank (new programs' configurations, fastest first).
Around it: validate data files, check/score/submit a submission, run the pipeline on Kaggle TPUs."""
PARAMS_HELP = "the settings file (default: params.yaml)"


def _validate(args: argparse.Namespace) -> int:
    from tpuperf.data.npz import validate_paths

    try:
        count, errors = validate_paths(args.paths)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    for err in errors:
        print(f"BAD {err}")
    print(f"{count} files checked, {count - len(errors)} valid, {len(errors)} bad")
    return 1 if errors else 0


def _synth(args: argparse.Namespace) -> int:
    import time

    from tpuperf.data.npz import find_npz
    from tpuperf.data.synthetic import write_dataset

    start = time.perf_counter()
    write_dataset(args.out, args.preset, args.seed, overwrite=args.overwrite)
    files = len(find_npz([args.out]))
    print(
        f"wrote {files} synthetic graphs (preset {args.preset!r}, seed {args.seed}) to {args.out} in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    import logging

    from tpuperf.collection import get_collection
    from tpuperf.config import load_config
    from tpuperf.data.preprocess import preprocess_stage

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    preprocess_stage(load_config(args.params), get_collection(args.collection))
    return 0


def _download(args: argparse.Namespace) -> int:
    from tpuperf.config import load_config
    from tpuperf.data.download import download_stage

    download_stage(load_config(args.params))
    return 0


def _fingerprint(args: argparse.Namespace) -> int:
    from tpuperf.config import load_config
    from tpuperf.data.download import DownloadError, write_data_fingerprint

    params = load_config(args.params).data
    try:
        fingerprint = write_data_fingerprint(params)
    except DownloadError as exc:
        raise DownloadError(f"{exc} Nothing was written to {params.fingerprint}.") from exc
    listed = f", {len(fingerprint['files'])} files listed" if "files" in fingerprint else ""
    print(f"tpuperf fingerprint: data source {fingerprint['source']}{listed} -> {params.fingerprint}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from tpuperf.config import load_config
    from tpuperf.training.trainer import train_collection

    train_collection(args.collection, args.model, load_config(args.params))
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    import logging

    from tpuperf.config import load_config
    from tpuperf.submission.ensemble import EnsembleSettings, run_ensemble

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_ensemble(EnsembleSettings.from_config(load_config(args.params)), split=args.split, out=args.out)
    return 0


def _export(args: argparse.Namespace) -> int:
    import logging

    from tpuperf.collection import get_collection
    from tpuperf.config import load_config
    from tpuperf.ranking.export import export_collection

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    export_collection(load_config(args.params), get_collection(args.collection))
    return 0


def _confidence(r) -> str:
    """The text format's second header line of one ranking (:class:`tpuperf.ranking.ranker.Ranking`)."""
    oof = ", ".join(f"{m} {v:.3f}" for m, v in r.oof_scores.items())
    if len(r.oof_scores) < 2:
        agreement = "n/a (one model)"
    elif r.member_agreement is None:
        agreement = "n/a (one config)"
    else:
        valid = "n/a" if r.valid_member_agreement is None else f"{r.valid_member_agreement:.3f}"
        agreement = (
            f"{r.member_agreement:.3f} (mean Kendall tau between the {len(r.oof_scores)} models' rankings; "
            f"on the valid programs: {valid})"
        )
    return (
        f"# out-of-fold {r.metric}: {oof}; member agreement: {agreement}; "
        f"feature values beyond outlier_sigma: {r.outlying_values}"
    )


def _rank(args: argparse.Namespace) -> int:
    import csv
    import json

    from tpuperf.collection import get_collection
    from tpuperf.config import load_config
    from tpuperf.ranking.ranker import rank

    if args.collection is not None:
        try:
            get_collection(args.collection)
        except ValueError as exc:
            raise UsageError(f"--collection: {exc}") from exc
    model = args.model or Path(load_config(args.params).export.out)
    rankings = rank(args.files, model, collection=args.collection, top=args.top, members=args.members)
    if args.format == "json":
        json.dump([r.to_dict() for r in rankings], sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(
            [
                "file",
                "collection",
                "rank",
                "config_id",
                "ensemble_score",
                "metric",
                "oof_scores",
                "member_agreement",
                "valid_member_agreement",
                "outlying_values",
            ]
        )
        for r in rankings:
            oof = ";".join(f"{m}={v!r}" for m, v in r.oof_scores.items())
            agreement, valid = ("" if a is None else repr(a) for a in (r.member_agreement, r.valid_member_agreement))
            for i, (config, score) in enumerate(zip(r.config_ids, r.ensemble_score)):
                writer.writerow(
                    [
                        r.path,
                        r.collection,
                        i,
                        int(config),
                        repr(float(score)),
                        r.metric,
                        oof,
                        agreement,
                        valid,
                        r.outlying_values,
                    ]
                )
    else:
        for r in rankings:
            print(f"# {r.path}: {r.collection}, {len(r.config_ids)} of {r.num_configs} configs, fastest first")
            print(_confidence(r))
            print("rank config_id ensemble_score")
            for i, (config, score) in enumerate(zip(r.config_ids, r.ensemble_score)):
                print(f"{i} {int(config)} {score:.6g}")
    return 0


def _positive(text: str) -> int:
    """argparse type of ``--top``: an int >= 1 (else a usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _check_submission(args: argparse.Namespace) -> int:
    from tpuperf.submission.csv import check_submission

    problems = check_submission(args.file, sample=args.sample, data_dir=args.data, split=args.split)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s) in {args.file}" if problems else f"OK {args.file}")
    return 1 if problems else 0


def _score(args: argparse.Namespace) -> int:
    import logging

    from tpuperf.submission.csv import score_submission

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    scores = score_submission(args.file, args.data, split=args.split)
    mean = scores.pop("mean")
    for name, value in scores.items():
        print(f"{name:<20} {value:.4f}")
    print(f"{'mean':<20} {mean:.4f}  ({len(scores)} of 5 collections, {args.split} split)")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from tpuperf.config import load_config
    from tpuperf.kaggle.submit import submit

    data = load_config(args.params).data if args.competition is None or args.data is None else None
    competition = args.competition or data.competition
    data_dir = args.data or Path(data.out)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"{data_dir}: no data directory to check the submission against "
            f"({'--data' if args.data else f'data.out in {args.params}'}): run `tpuperf download` "
            "(or `dvc repro download`) first, or pass --data"
        )
    print(submit(args.file, args.message, competition, data_dir=data_dir, sample=args.sample))
    return 0


def _kernels_build(args: argparse.Namespace) -> int:
    from tpuperf.config import load_params
    from tpuperf.kaggle.kernels import build_kernels

    build_kernels(
        load_params(args.params),
        args.out,
        collections=args.collections,
        models=args.models,
        download=args.download_wheels,
    )
    return 0


def _kernels_push(args: argparse.Namespace) -> int:
    from tpuperf.config import load_config
    from tpuperf.kaggle.kernels import push_kernels

    wait = load_config(args.params).kernels.dataset_wait_seconds
    pushed = push_kernels(
        args.dir, message=args.message, create=args.create, kernels_only=args.kernels_only, wait_seconds=wait
    )
    print("pushed; watch with: " + "; ".join(f"kaggle kernels status {k}" for k in pushed))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tpuperf", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check TpuGraphs .npz files (files or directories, recursive)")
    p.add_argument("paths", nargs="+", type=Path, help=".npz files or directories (searched recursively)")
    p.set_defaults(func=_validate)

    p = sub.add_parser(
        "synth", help="write a synthetic dataset in the real layout (hidden cost model: tpuperf.data.synthetic)"
    )
    p.add_argument("--out", type=Path, required=True, help="output directory (must not exist unless --overwrite)")
    p.add_argument(
        "--preset", default="small", choices=("tiny", "small", "medium", "real"), help="dataset size (default: small)"
    )
    p.add_argument("--seed", type=int, default=0, help="same preset and seed, same bytes (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    p.set_defaults(func=_synth)

    p = sub.add_parser(
        "download",
        help="put the dataset + manifest.json at data.out (params: data.*); files failing validation are listed "
        "in the manifest, preprocess.on_bad_file decides",
    )
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help=PARAMS_HELP)
    p.set_defaults(func=_download)

    p = sub.add_parser(
        "fingerprint", help="write data.fingerprint: what download would fetch (no network; params: data.*)"
    )
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help=PARAMS_HELP)
    p.set_defaults(func=_fingerprint)

    p = sub.add_parser(
        "preprocess", help="build cache/<collection>/ from the downloaded data (params: preprocess.*, data.out)"
    )
    p.add_argument("--collection", required=True, help="e.g. layout:nlp:random or layout-nlp-random")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help=PARAMS_HELP)
    p.set_defaults(func=_preprocess)

    p = sub.add_parser("train", help="k-fold training of one model on one collection (params: train.*, models.*)")
    p.add_argument("--collection", required=True, help="e.g. layout:nlp:random or layout-nlp-random")
    p.add_argument("--model", required=True, help="a key of models in params.yaml, e.g. chebsage")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help=PARAMS_HELP)
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "ensemble",
        help="every collection's fold predictions -> the checked submission CSV (params: ensemble.*); refuses "
        "runs predicted from another cache than preprocess.out holds",
    )
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help=PARAMS_HELP)
    p.add_argument("--split", choices=("test", "valid"), default="test", help="which split's rows to write")
    p.add_argument("--out", type=Path, help="CSV path (default: <ensemble.out>/submission.csv or valid_submission.csv)")
    p.set_defaults(func=_ensemble)

    p = sub.add_parser(
        "export",
        help="write <export.out>/<collection>/: the ensemble's models, weights and transform (tpuperf.ranking.export); "
        "every fold must have been trained for the current cache and model settings",
    )
    p.add_argument("--collection", required=True, help="e.g. layout:nlp:random or layout-nlp-random")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help=PARAMS_HELP)
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "rank",
        help="rank every configuration of new .npz programs with an exported model, fastest first (warns when "
        "the model learnt from synthetic data)",
        description="Rank the configurations of TpuGraphs .npz programs with an exported model, fastest first.",
        epilog="Output per file, fastest first: config_id and ensemble_score (in [0, 1], the members' combined "
        "normalised rank that orders the list; no runtime), with the models' out-of-fold scores, their agreement "
        'on this file and its count of feature values beyond export.outlier_sigma: README "Ranking new programs" '
        "says what each means and when to doubt a ranking. Warnings (stderr): models trained on synthetic data, "
        "opcodes training never saw, feature values far outside the training data.",
    )
    p.add_argument(
        "files",
        nargs="+",
        type=Path,
        help="TpuGraphs .npz files or directories (recursive; runtimes may be zeros or absent)",
    )
    p.add_argument(
        "--model", type=Path, help="an export dir, or the root holding one per collection (default: export.out)"
    )
    p.add_argument(
        "--collection", help="collection of every file (default: from its path, or the model's when it has one)"
    )
    p.add_argument(
        "--top",
        type=_positive,
        help="configs listed per file, distinct configurations first (default: 5 for tile, all for layout)",
    )
    p.add_argument("--format", choices=("text", "csv", "json"), default="text", help="output format (default: text)")
    p.add_argument(
        "--members",
        choices=("all", "best"),  # tpuperf.ranking.ranker.MEMBER_CHOICES (not imported here: it loads polars)
        default="all",
        help="all: the exported ensemble (the submission.csv ranking); best: its highest-weighted model only (faster)",
    )
    p.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="read for export.out when --model is absent"
    )
    p.set_defaults(func=_rank)

    p = sub.add_parser("check-submission", help="check a submission CSV; one line per problem, exit 1 on any")
    p.add_argument("file", type=Path, help="the submission CSV (header ID,TopConfigs)")
    p.add_argument("--sample", type=Path, help="sample_submission.csv whose ID set the file must match")
    p.add_argument("--data", type=Path, help="TpuGraphs data dir (npz/...): check IDs and config counts")
    p.add_argument(
        "--split", default="test", choices=("train", "valid", "test"), help="split of --data the file is for"
    )
    p.set_defaults(func=_check_submission)

    p = sub.add_parser("score", help="competition metric of a submission-format CSV against labelled data")
    p.add_argument("file", type=Path, help="the submission CSV (header ID,TopConfigs)")
    p.add_argument("--data", type=Path, required=True, help="TpuGraphs data dir with labelled npz/.../<split>/")
    p.add_argument(
        "--split",
        default="valid",
        choices=("train", "valid", "test"),
        help="split of --data the file is for (default: valid)",
    )
    p.set_defaults(func=_score)

    p = sub.add_parser(
        "submit",
        help="check a submission as check-submission --data does, then send it with the kaggle CLI (never one of a "
        "synthetic dataset)",
    )
    p.add_argument("file", type=Path, help="the submission CSV (header ID,TopConfigs)")
    p.add_argument("-m", "--message", required=True, help="the submission's description on Kaggle")
    p.add_argument("--competition", help="Kaggle competition (default: data.competition in params.yaml)")
    p.add_argument(
        "--data",
        type=Path,
        help="TpuGraphs data dir whose test files the file must match (default: data.out in params.yaml)",
    )
    p.add_argument("--sample", type=Path, help="also require the sample's exact ID set")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help=PARAMS_HELP)
    p.set_defaults(func=_submit)

    p = sub.add_parser("kernels", help="Kaggle TPU kernels running this pipeline (kernels/README.md)")
    ksub = p.add_subparsers(dest="kernels_command", required=True)
    k = ksub.add_parser(
        "build", help="write the wheel bundle dataset + one kernel folder per collection (params: kernels.*)"
    )
    k.add_argument("--out", type=Path, default=Path("build/kernels"))
    k.add_argument("--params", type=Path, default=Path("params.yaml"), help=PARAMS_HELP)
    k.add_argument("--collections", nargs="+", help="default: kernels.collections")
    k.add_argument("--models", nargs="+", help="default: kernels.models")
    k.add_argument(
        "--download-wheels",
        action="store_true",
        help="pip download kernels/requirements-kernel.txt into kernels.wheelhouse first (needs the network)",
    )
    k.set_defaults(func=_kernels_build)
    k = ksub.add_parser(
        "push", help="kaggle datasets version (or create) the bundle, then kaggle kernels push each kernel"
    )
    k.add_argument("--dir", type=Path, default=Path("build/kernels"), help="output of tpuperf kernels build")
    k.add_argument("--params", type=Path, default=Path("params.yaml"), help=PARAMS_HELP)
    k.add_argument("-m", "--message", help="dataset version note (default: tpuperf version + source fingerprint)")
    k.add_argument("--create", action="store_true", help="first push: kaggle datasets create instead of version")
    k.add_argument("--kernels-only", action="store_true", help="push the kernels without a new bundle version")
    k.set_defaults(func=_kernels_push)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; its exit code (:mod:`tpuperf.errors`): 0 done, 1 an expected failure or an output
    location that cannot be written, 2 a usage error, 130 an interrupt, each as one line ``tpuperf <command>[
    failed|interrupted]: <message>`` on stderr. A warning is one line ``tpuperf <command>: warning: <message>``
    (tpuperf's are UserWarnings); one of another category, which a library raised, also names it and where it was
    raised: ``... warning: RuntimeWarning: <message> (<file>:<line>)``."""
    args = build_parser().parse_args(argv)
    command = " ".join(filter(None, (args.command, getattr(args, "kernels_command", None))))

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = message if category is UserWarning else f"{category.__name__}: {message} ({filename}:{lineno})"
        print(f"tpuperf {command}: warning: {text}", file=file or sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            return args.func(args)
    except UsageError as exc:
        print(f"tpuperf {command}: {exc}", file=sys.stderr)
        return 2
    except EXPECTED as exc:
        print(f"tpuperf {command} failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if not storage_error(exc):
            raise
        # permission denied may be an input's (an unreadable .npz) as well as an output location's
        may = "may read and write" if isinstance(exc, PermissionError) else "can write"
        print(
            f"tpuperf {command} failed: {exc}: nothing half-written is left; run it again once it {may} there",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            f"tpuperf {command} interrupted: its outputs are written whole or not at all; run it again (train resumes "
            "each fold after its last finished epoch)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
