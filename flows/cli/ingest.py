"""``depthmine ingest``: one stereo movie into the dataset (the ``ingest_movie`` flow)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from flows.runners import RUNNERS
from pipeline.layouts import Layout
from pipeline.sampling import SPLITS

__all__ = [
    "register",
    "add_ingest_options",
    "add_runner_options",
    "label_settings",
    "runner_spec",
    "prefect_env_defaults",
]


def prefect_env_defaults(verbose: int = 0) -> None:
    """Environment defaults for CLI runs that start flows: quiet Prefect logs unless -v, and an API.

    Called by the command (from :func:`flows.cli.main`), never at import; telemetry and the UI are
    switched off once for every command by :func:`flows.cli.environment_defaults`.

    Without ``PREFECT_API_URL`` the temporary Prefect server is started here, tied to this
    process (:func:`flows.runners.start_temporary_server`), so killing the CLI kills it too.
    """
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    from flows.runners import start_temporary_server

    start_temporary_server()  # without PREFECT_API_URL: a temporary server that dies with this process


def add_runner_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the work runs")
    g.add_argument(
        "--runner",
        choices=RUNNERS,
        default="threads",
        help="task runner for the movies' tasks, one per movie that decodes and labels it where it runs (default threads)",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="ingest: labelling threads; build: movies at once (threads, processes, local Dask workers; default: one per core)",
    )
    g.add_argument(
        "--dask-address",
        default=None,
        metavar="ADDR",
        help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (with --runner dask); the dataset must be on storage every worker sees",
    )


def runner_spec(args: argparse.Namespace):
    """The :class:`flows.runners.RunnerSpec` of :func:`add_runner_options`' options (checked: a
    bad combination is a :class:`~pipeline.errors.ConfigError`)."""
    from flows.runners import RunnerSpec

    return RunnerSpec(args.runner, args.workers, args.dask_address)


def label_settings(args: argparse.Namespace):
    """The :class:`pipeline.ingest.LabelSettings` of :func:`add_ingest_options`' options."""
    from pipeline.ingest import LabelSettings

    return LabelSettings(args.flow, args.ckpt, args.device, tuple(args.overrides))


def add_ingest_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("labelling")
    g.add_argument(
        "--flow",
        default=None,
        metavar="NAME",
        help="optical-flow backend (default dis-medium; see `depthmine disparity --help`)",
    )
    g.add_argument("--ckpt", default=None, metavar="FILE", help="local weights file for the backend")
    g.add_argument("--device", default=None, help="cpu, cuda or cuda:N for torch backends")
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="configuration override, repeatable (e.g. --set disparity.lr_threshold_px=1.5 --set chunk_frames=4)",
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="ingest one stereo movie into a dataset (Prefect flow)",
        description=(
            "Probe the movie, decode it once (shots and sampling), compute disparity for the sampled "
            "frames in parallel tasks, and write the movie's Parquet shards into DATASET, then publish "
            "the dataset manifest with this movie added or replaced. Resumable: run the same command "
            "again after a crash and finished chunks are not recomputed. Runs on the Prefect server "
            "in PREFECT_API_URL, or a temporary local one."
        ),
    )
    p.add_argument("movie", metavar="MOVIE", help="the movie file (left eye's file for --layout separate)")
    p.add_argument("--out", required=True, metavar="DATASET", help="dataset folder")
    p.add_argument(
        "--movie-id",
        default=None,
        metavar="ID",
        help="name in the dataset: letters and digits of any script, . _ + -, at most 100 characters "
        "(default: from the file name)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace a movie of this id that was ingested from another file (refused without it)",
    )
    p.add_argument("--split", choices=SPLITS, default="train", help="split of this movie (default train)")
    p.add_argument(
        "--layout", default=None, choices=[layout.value for layout in Layout], help="stereo layout (default: detect)"
    )
    p.add_argument("--right", default=None, metavar="FILE", help="right eye's file (layout separate)")
    add_ingest_options(p)
    add_runner_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.ingest import preflight

    labelling = label_settings(args)
    # Mistakes fail here, in the first second, before Prefect starts or the dataset is touched.
    preflight(args.movie, args.out, args.movie_id, args.right, labelling, replace=args.replace)
    runner = runner_spec(args)
    prefect_env_defaults(args.verbose)
    from flows.ingest import ingest_movie

    result = ingest_movie(
        movie=args.movie,
        out=args.out,
        movie_id=args.movie_id,
        split=args.split,
        layout=args.layout,
        right=args.right,
        labelling=labelling,
        runner=runner,
        progress=sys.stderr.isatty(),
        replace=args.replace,
    )
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "manifest"}, indent=2))
        return 0
    rej = sum(result["rejected"].values())
    what = (
        "unchanged (already ingested)"
        if result["skipped"]
        else f"{result['chunks_resumed']}/{result['chunks']} chunks resumed"
    )
    print(
        f"{result['movie_id']} ({result['split']}): {result['kept']} frames kept, {rej} rejected"
        + (f" {result['rejected']}" if rej else "")
        + f"; {what}; {result['seconds']:.1f} s"
    )
    swap = result.get("swapped_eyes") or {}
    if swap.get("swapped_shots"):
        corrected = swap.get("corrected_shots") or []
        print(
            f"eyes look reversed in shots {swap['swapped_shots']}"
            + (
                f"; relabelled with the eyes exchanged: {corrected}"
                if corrected
                else "; rerun with --set swap_eyes=auto (or always) to correct them"
            )
        )
    print(f"dataset: {os.path.abspath(args.out)}/manifest.json")
    return 0
