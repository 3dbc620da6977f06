"""Scheduled rebuilds: ``build_dataset`` as a deployment with a schedule, served from this process.

``serve_rebuild`` registers the deployment against the Prefect server in ``PREFECT_API_URL``
(start one with ``prefect server start``) and then runs its scheduled flow runs until stopped.
The deployment has a concurrency limit of one with the ``CANCEL_NEW`` strategy, so two rebuilds
never overlap: a run that comes due while the previous rebuild is still going is cancelled (the
next one picks up everything anyway). ``prefect.yaml`` declares the same rebuild for
``prefect deploy`` with a work pool instead, under another name (``nightly-rebuild-pool``), so the
two never replace each other.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

__all__ = ["rebuild_deployment", "serve_rebuild", "deployment_parameters", "DEFAULT_DEPLOYMENT"]

DEFAULT_DEPLOYMENT = "nightly-rebuild"


def deployment_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """The JSON a deployment stores for ``parameters``: a typed value as an object of the fields it
    sets, and values left at None or empty not sent at all, so the flow's own defaults apply."""
    out: dict[str, Any] = {}
    for name, value in parameters.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(value).items()}
            value = {k: v for k, v in value.items() if v is not None and v != []}
        if value is not None and value != [] and value != {}:
            out[name] = value
    return out


def rebuild_deployment(
    catalog: str,
    out: str,
    cron: str | None = None,
    interval_s: float | None = None,
    name: str = DEFAULT_DEPLOYMENT,
    parameters: dict[str, Any] | None = None,
) -> Any:
    """The ``build_dataset`` deployment (a :class:`prefect.deployments.runner.RunnerDeployment`).

    Args:
        catalog, out: the flow's parameters (made absolute: runs start in other processes).
        cron: a cron schedule (``"0 3 * * *"``: every night at 03:00, server time zone UTC).
        interval_s: or an interval in seconds.
        parameters: more ``build_dataset`` parameters (``labelling``, ``runner``, ``keep_versions``, ...),
            typed or as JSON; stored as :func:`deployment_parameters` gives them.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType

    from flows.build import build_dataset

    if not cron and not interval_s:
        raise ConfigError("a schedule needs --cron EXPR or --interval SECONDS")
    if not Path(catalog).exists():
        raise ConfigError(f"{catalog}: no such catalog file")
    params = {"catalog": str(Path(catalog).resolve()), "out": str(Path(out).resolve())}
    params.update(deployment_parameters(parameters or {}))
    return build_dataset.to_deployment(
        name=name,
        cron=cron or None,
        interval=interval_s or None,
        parameters=params,
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        description=f"Rebuild {params['out']} from {params['catalog']}",
        tags=["depthmine", "rebuild"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def serve_rebuild(
    catalog: str,
    out: str,
    cron: str | None = None,
    interval_s: float | None = None,
    name: str = DEFAULT_DEPLOYMENT,
    run_now: bool = False,
    parameters: dict[str, Any] | None = None,
) -> None:
    """Register the rebuild deployment and execute its runs here until interrupted (blocks)."""
    from prefect import serve

    deployment = rebuild_deployment(catalog, out, cron, interval_s, name, parameters)
    if run_now:
        from prefect.deployments import run_deployment

        deployment.apply()
        run_deployment(f"build-dataset/{name}", timeout=0)
    serve(deployment, print_starting_message=True)
