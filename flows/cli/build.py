"""``depthmine build``: rebuild a dataset from a catalog (the ``build_dataset`` flow)."""

from __future__ import annotations

import argparse
import os
import sys

from flows.cli.ingest import add_ingest_options, add_runner_options, label_settings, prefect_env_defaults, runner_spec

__all__ = ["register", "add_rebuild_options", "rebuild_parameters", "validate_rebuild"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "build",
        help="rebuild a dataset from a catalog of movies (Prefect flow)",
        description=(
            "Ingest every new or changed movie of the catalog (YAML or CSV: path, movie_id, split, "
            "layout, right, overrides), drop movies no longer listed, and publish a new dataset "
            "version atomically (readers keep the previous one until it is complete). The catalog and "
            "every --set and catalog override are checked before any work (a mistake: one line, exit 2, "
            "nothing written). A movie with bad input is reported; a published one keeps its published "
            "version, a new one is left out; the exit status is then 1. When every movie fails, or more "
            "than --max-failed-share of the published ones, nothing is published (exit 1)."
        ),
    )
    p.add_argument("--catalog", required=True, metavar="FILE", help="catalog file (.yaml/.yml/.csv)")
    p.add_argument("--out", required=True, metavar="DATASET", help="dataset folder")
    add_rebuild_options(p)
    p.set_defaults(func=run)


def add_rebuild_options(p: argparse.ArgumentParser) -> None:
    """The options of a rebuild besides --catalog and --out, defined once for ``build`` and ``serve``.

    ``serve`` schedules exactly the rebuild ``build`` runs, so both take the same options from here
    (and :func:`rebuild_parameters` maps them onto ``build_dataset``'s parameters in one place).
    """
    p.add_argument(
        "--keep-versions",
        type=int,
        default=2,
        metavar="N",
        help="dataset versions whose shards stay on disk (default 2); older ones are garbage-collected",
    )
    p.add_argument(
        "--max-failed-share",
        type=float,
        default=0.25,
        metavar="F",
        help="publish nothing when more than this share of the published movies fail (default 0.25); "
        "nothing is published either when every movie fails",
    )
    add_ingest_options(p)
    add_runner_options(p)


def rebuild_parameters(args: argparse.Namespace) -> dict:
    """``build_dataset``'s parameters from the options of :func:`add_rebuild_options` (plus catalog, out):
    ``labelling`` (:class:`~pipeline.ingest.LabelSettings`) and ``runner`` (:class:`~flows.runners.RunnerSpec`,
    checked as it is built) as their typed values."""
    return {
        "catalog": args.catalog,
        "out": args.out,
        "labelling": label_settings(args),
        "runner": runner_spec(args),
        "keep_versions": args.keep_versions,
        "max_failed_share": args.max_failed_share,
    }


def validate_rebuild(params: dict) -> None:
    """Every check of a rebuild before Prefect starts: :func:`flows.build.validate_build`, the flow name, --ckpt.

    The flow backend's name and checkpoint file are checked here too, so a typo in ``--flow`` or a
    missing ``--ckpt`` fails in the first second rather than once per movie (or, for ``serve``, at
    03:00 every night).

    Raises:
        ConfigError, BadInputError: one line naming the problem.
    """
    from pathlib import Path

    from flows.build import validate_build
    from pipeline.errors import BadInputError
    from pipeline.flow import BACKENDS

    validate_build(**params)
    flow, ckpt = params["labelling"].flow, params["labelling"].ckpt
    if flow and flow not in BACKENDS and not BACKENDS.is_family(flow):
        raise BACKENDS.unknown(flow)
    if ckpt and not Path(ckpt).is_file():
        raise BadInputError(ckpt, "checkpoint file not found", "--ckpt")


def run(args: argparse.Namespace) -> int:
    params = rebuild_parameters(args)
    # Mistakes fail here, in the first second, before Prefect starts or any movie is decoded.
    validate_rebuild(params)
    prefect_env_defaults(args.verbose)
    from flows.build import build_dataset

    s = build_dataset(**params, progress=sys.stderr.isatty())
    print_summary(s, args.out)
    return 1 if s["failed"] else 0


def print_summary(s: dict, out: str) -> None:
    state = " unchanged (nothing published)" if s.get("unchanged") else ""
    print(
        f"dataset {os.path.abspath(out)} version {s['version']}{state}: {len(s['movies'])} movies, {s['rows']} frames ({s['seconds']:.1f} s)"
    )
    for m in s["movies"]:
        status = "unchanged" if m["skipped"] else "ingested"
        print(
            f"  {m['movie_id']:<24} {m['split']:<5} {status:<9} {m['kept']:>6} kept {sum(m['rejected'].values()):>5} rejected"
        )
    for f in s["failed"]:
        kept = "published version kept" if f.get("kept_previous") else "not published"
        print(f"  {f['movie_id']:<24} SKIPPED (catalog line {f['line']}, {kept}): {f['error']}", file=sys.stderr)
    if s["removed"]:
        print(f"  removed: {', '.join(s['removed'])}")
