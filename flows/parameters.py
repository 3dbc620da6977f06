"""The movie flows' typed parameters, and the flat ones that deployments of older versions still send.

``ingest_movie`` and ``build_dataset`` take how movies are labelled as one parameter,
``labelling`` (:class:`pipeline.ingest.LabelSettings`), and where their tasks run as another,
``runner`` (:class:`flows.runners.RunnerSpec`). Both are frozen dataclasses, so Prefect validates
them (pydantic builds them from a deployment's JSON, ``__post_init__`` checks them) and stores them
as JSON objects::

    {"labelling": {"flow": "ptlflow:raft", "ckpt": "/w/raft.ckpt", "device": "cuda", "overrides": ["chunk_frames=4"]},
     "runner": {"kind": "dask", "workers": null, "dask_address": "tcp://scheduler:8786"}}

Earlier versions of the flows took seven flat parameters instead: ``flow``, ``ckpt``,
``device``, ``overrides`` and ``runner`` (a name), ``workers``, ``dask_address``. A deployment
registered then keeps them (its stored parameters and schema until it is registered again, the
runs it already scheduled, ``prefect deployment run --param flow=...``), and a nightly rebuild
should not fail the night after an upgrade. So the flows still take them (:class:`_MovieFlow`),
read them into the new shape (:func:`upgrade_flat_parameters`) and log a warning that names it;
only a run that gives one value in both shapes (``flow`` and ``labelling``) fails, in one line,
before any work. (A deployment registered by this version refuses a ``runner`` name itself: its
schema says ``runner`` is an object.)
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
from typing import Any, Callable

import prefect
from prefect.utilities.callables import parameter_schema

from pipeline.errors import ConfigError

__all__ = ["FLAT_PARAMETERS", "upgrade_flat_parameters", "movie_flow"]

log = logging.getLogger(__name__)

#: Old flat parameter -> (the parameter that holds it now, its field there).
FLAT_PARAMETERS: dict[str, tuple[str, str]] = {
    "flow": ("labelling", "flow"),
    "ckpt": ("labelling", "ckpt"),
    "device": ("labelling", "device"),
    "overrides": ("labelling", "overrides"),
    "runner": ("runner", "kind"),  # only a name: an object is already the new shape
    "workers": ("runner", "workers"),
    "dask_address": ("runner", "dask_address"),
}


def upgrade_flat_parameters(
    flow_name: str, parameters: dict[str, Any], defaults: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """``parameters`` with the old flat names moved into ``labelling`` and ``runner``, and the names moved.

    A flat value of None was the old default and is dropped. Parameters of the new shape come back
    as they are (a ``runner`` object is the new shape; a ``runner`` name the old one). ``defaults``
    are the flow's own default values, which Prefect fills in for a run that does not give them:
    such a value was not given.

    Raises:
        ConfigError: a value given in both shapes (``workers`` beside a ``runner`` object), naming
            the new shape to use.
    """
    params = dict(parameters)
    for name in [n for n in FLAT_PARAMETERS if n != "runner" and n in params and params[n] is None]:
        del params[name]  # the old default (and what Prefect binds when a run does not give it)
    flat = [n for n in FLAT_PARAMETERS if n in params and (n != "runner" or isinstance(params[n], str))]
    if not flat:
        return params, []
    moved: dict[str, dict[str, Any]] = {}
    for name in flat:
        holder, field = FLAT_PARAMETERS[name]
        moved.setdefault(holder, {})[field] = params.pop(name)
    for holder, fields in moved.items():
        given = params.get(holder) is not None and params.get(holder) is not (defaults or {}).get(holder)
        if given:
            names = [n for n in flat if FLAT_PARAMETERS[n][0] == holder]
            raise ConfigError(
                f"{flow_name}: parameter(s) {', '.join(names)} are the old flat shape and {holder!r} is given "
                f"too: put them in {holder}, e.g. {holder}={json.dumps(fields)} (README: flow parameters)"
            )
        params[holder] = fields
    return params, flat


class _MovieFlow(prefect.Flow):
    """A Prefect flow that still takes the old flat parameters (:data:`FLAT_PARAMETERS`).

    Prefect binds a run's parameters to ``flow.fn``'s signature before anything else (an unknown
    name would crash a deployment's run before the flow could say why), then validates them with
    :meth:`validate_parameters`. So ``fn`` is the flow function with the old names added as
    keyword-only parameters, :meth:`validate_parameters` moves their values into the new shape
    (:func:`upgrade_flat_parameters`), and what deployments and the UI see (the flow's signature
    and parameter schema) stays the function's own.
    """

    def __init__(self, fn: Callable[..., Any], **options: Any):
        super().__init__(fn=_taking_flat_parameters(fn), **options)
        self._show_signature_of(fn)

    def _show_signature_of(self, fn: Callable[..., Any]) -> None:
        self.__signature__ = inspect.signature(fn)
        self.parameters = parameter_schema(fn)
        self._shown = fn

    def validate_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        parameters, moved = upgrade_flat_parameters(self.name, parameters, self._defaults())
        if moved:
            _warn_flat(self.name, moved, parameters)
        return super().validate_parameters(parameters)

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        # What a run started here (a Python call) records: the new shape, not the flat names (those
        # Prefect bound to their None default included). Both shapes at once: recorded as given,
        # and validate_parameters fails the run saying why.
        with contextlib.suppress(ConfigError):
            parameters, _ = upgrade_flat_parameters(self.name, parameters, self._defaults())
        return super().serialize_parameters(parameters)

    def _defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self.__signature__.parameters.items()}

    def with_options(self, **options: Any) -> Any:
        new = super().with_options(**options)  # Prefect builds a plain Flow over our fn
        new.__class__ = type(self)
        new._show_signature_of(self._shown)
        return new


def _taking_flat_parameters(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with the flat names it lacks as keyword-only parameters (None: not given), dropped
    before the call (their values are in the new shape by then)."""
    signature = inspect.signature(fn, eval_str=True)
    flat = [n for n in FLAT_PARAMETERS if n not in signature.parameters]

    @functools.wraps(fn)
    def taking_flat(*args: Any, **kwargs: Any) -> Any:
        for name in flat:
            kwargs.pop(name, None)
        return fn(*args, **kwargs)

    extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Any) for n in flat]
    taking_flat.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])
    return taking_flat


def movie_flow(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``@prefect.flow(**options)`` for a flow whose deployments may still send the old flat parameters."""

    def wrap(fn: Callable[..., Any]) -> Any:
        return _MovieFlow(fn, **options)

    return wrap


def _warn_flat(flow_name: str, moved: list[str], parameters: dict[str, Any]) -> None:
    """Say which names to update: in the run's own log when its id is known (a deployment's run, on a
    worker or under ``serve``), else in this module's log (a Python call: its caller's console)."""
    new = {k: parameters[k] for k in ("labelling", "runner") if isinstance(parameters.get(k), dict)}
    message = (
        f"{flow_name}: parameter(s) {', '.join(moved)} are the old flat shape, read as "
        f"{json.dumps(new)}; update the deployment's parameters (README: flow parameters)"
    )
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    if run_id:  # the run's logger: the warning shows with the run in the UI
        logging.getLogger("prefect.flow_runs").warning(message, extra={"flow_run_id": run_id})
    else:
        log.warning(message)
