"""``depthmine serve``: scheduled dataset rebuilds against a Prefect server.

``serve`` schedules exactly the rebuild ``depthmine build`` runs: it takes ``build``'s options from
:func:`flows.cli.build.add_rebuild_options` (one definition), checks them the same way before anything
is registered, and prints the deployment it is about to serve, so a container's log says which
backend, device and dataset its nightly rebuild uses.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from flows.cli.build import add_rebuild_options, rebuild_parameters, validate_rebuild
from flows.cli.ingest import prefect_env_defaults
from flows.serve import deployment_parameters

__all__ = ["register", "serve_plan"]


def register(subparsers) -> None:
    from flows.serve import DEFAULT_DEPLOYMENT

    p = subparsers.add_parser(
        "serve",
        help="rebuild the dataset on a schedule (Prefect deployment)",
        description=(
            "Register build_dataset as a deployment with a schedule on the Prefect server in "
            "PREFECT_API_URL (start one with `prefect server start`, then `prefect config set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api`), and run its scheduled rebuilds in this "
            "process until interrupted. Two rebuilds never overlap (concurrency limit 1: a run due "
            "while one is going is cancelled). Takes the options of `depthmine build`, checked "
            "before anything is registered (a mistake: one line, exit 2, nothing scheduled); what "
            "is scheduled is printed first. --dry-run stops after that."
        ),
    )
    p.add_argument("--catalog", required=True, metavar="FILE", help="catalog file (.yaml/.yml/.csv)")
    p.add_argument("--out", default="dataset", metavar="DATASET", help="dataset folder (default ./dataset)")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help='cron schedule in UTC, e.g. "0 3 * * *" (every night at 03:00)')
    when.add_argument("--interval", type=float, metavar="SECONDS", help="or a fixed interval in seconds")
    p.add_argument(
        "--name",
        default=DEFAULT_DEPLOYMENT,
        help=f"deployment name (default {DEFAULT_DEPLOYMENT}; prefect.yaml's work-pool deployment has another)",
    )
    p.add_argument("--run-now", action="store_true", help="also start one rebuild right away")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the options and print what would be scheduled, then exit without contacting Prefect",
    )
    add_rebuild_options(p)
    p.set_defaults(func=run)


def _absolute(path: str | None) -> str | None:
    # Scheduled runs start later, possibly in another working directory: every path is made absolute.
    return None if path is None else str(Path(path).expanduser().resolve())


def serve_plan(args: argparse.Namespace) -> dict:
    """The deployment ``serve`` registers: name, schedule and ``build_dataset`` parameters (typed:
    :func:`flows.serve.deployment_parameters` gives the JSON the deployment stores)."""
    params = rebuild_parameters(args)
    labelling = dataclasses.replace(params["labelling"], ckpt=_absolute(params["labelling"].ckpt))
    params.update(catalog=_absolute(params["catalog"]), out=_absolute(params["out"]), labelling=labelling)
    return {
        "deployment": f"build-dataset/{args.name}",
        "schedule": f"cron {args.cron!r} (UTC)" if args.cron else f"every {args.interval:g} s",
        "parameters": params,
    }


def print_plan(plan: dict) -> None:
    params = deployment_parameters(plan["parameters"])
    labelling, runner = params.pop("labelling", {}), params.pop("runner")
    print(f"deployment {plan['deployment']}")
    print(f"  schedule  {plan['schedule']}")
    print(f"  catalog   {params.pop('catalog')}")
    print(f"  out       {params.pop('out')}")
    overrides = labelling.pop("overrides", [])
    options = {**labelling, "runner": runner.pop("kind"), **runner, **params}
    print(f"  options   {' '.join(f'{k}={v}' for k, v in options.items())}")
    for item in overrides:
        print(f"  --set     {item}")


def run(args: argparse.Namespace) -> int:
    plan = serve_plan(args)
    # Mistakes fail here, before Prefect starts or anything is registered.
    validate_rebuild(plan["parameters"])
    if args.cron is None and not args.interval > 0:
        from pipeline.errors import ConfigError

        raise ConfigError(f"--interval must be > 0 seconds, got {args.interval:g}")
    if args.cron is not None:
        _check_cron(args.cron)
    print_plan(plan)
    _warn_without_gpu(plan["parameters"])
    if args.dry_run:
        return 0
    prefect_env_defaults(args.verbose)
    from flows.serve import serve_rebuild

    params = dict(plan["parameters"])
    serve_rebuild(
        params.pop("catalog"),
        params.pop("out"),
        cron=args.cron,
        interval_s=args.interval,
        name=args.name,
        run_now=args.run_now,
        parameters=params,
    )
    return 0


def _check_cron(expr: str) -> None:
    """A malformed cron expression is a one-line error here, not a traceback from the Prefect client."""
    from prefect.client.schemas.schedules import CronSchedule

    from pipeline.errors import ConfigError

    try:
        CronSchedule(cron=expr)  # Prefect's own check: exactly what the server would accept
    except ValueError:
        raise ConfigError(
            f'--cron: {expr!r} is not a cron expression (e.g. "0 3 * * *": every night at 03:00)'
        ) from None


def _warn_without_gpu(params: dict) -> None:
    """Say so at start when the runs would label on a CUDA device this machine does not show.

    ``serve`` runs the rebuilds in this process, so the device must be here (a container started
    without the NVIDIA runtime, a wrong ``NVIDIA_VISIBLE_DEVICES``); with ``--runner dask`` the
    labelling runs on the Dask workers, whose devices this process cannot see, so nothing is said.
    A warning, not an error: the machine may gain its device before the first scheduled run.
    """
    import sys

    device = str(params["labelling"].device or "")
    if not device.startswith("cuda") or params["runner"].kind == "dask":
        return
    import torch

    if not torch.cuda.is_available():
        print(
            f"depthmine: warning: --device {device}, but torch sees no CUDA device here "
            "(driver, NVIDIA container runtime, NVIDIA_VISIBLE_DEVICES?); the scheduled rebuilds would fail",
            file=sys.stderr,
        )
