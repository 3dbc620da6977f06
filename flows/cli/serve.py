"""``depthmine serve``: scheduled dataset rebuilds against a Prefect server."""

from __future__ import annotations

import argparse

from flows.cli.ingest import add_runner_options, prefect_env_defaults

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="rebuild the dataset on a schedule (Prefect deployment)",
        description=(
            "Register build_dataset as a deployment with a schedule on the Prefect server in "
            "PREFECT_API_URL (start one with `prefect server start`, then `prefect config set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api`), and run its scheduled rebuilds in this "
            "process until interrupted. Two rebuilds never overlap (concurrency limit 1: a run due "
            "while one is going is cancelled)."
        ),
    )
    p.add_argument("--catalog", required=True, metavar="FILE", help="catalog file (.yaml/.yml/.csv)")
    p.add_argument("--out", default="dataset", metavar="DATASET", help="dataset folder (default ./dataset)")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help='cron schedule in UTC, e.g. "0 3 * * *" (every night at 03:00)')
    when.add_argument("--interval", type=float, metavar="SECONDS", help="or a fixed interval in seconds")
    p.add_argument("--name", default="nightly-rebuild", help="deployment name (default nightly-rebuild)")
    p.add_argument("--run-now", action="store_true", help="also start one rebuild right away")
    p.add_argument("--flow", default=None, metavar="NAME", help="optical-flow backend for every movie")
    add_runner_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prefect_env_defaults(args.verbose)
    from flows.serve import serve_rebuild

    params = {"runner": args.runner, "workers": args.workers, "dask_address": args.dask_address}
    if args.flow:
        params["flow"] = args.flow
    serve_rebuild(
        args.catalog,
        args.out,
        cron=args.cron,
        interval_s=args.interval,
        name=args.name,
        run_now=args.run_now,
        parameters={k: v for k, v in params.items() if v is not None},
    )
    return 0
