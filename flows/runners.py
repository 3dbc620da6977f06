"""Choosing where tasks run: threads, processes, or a Dask cluster (one machine or many).

The flows take the runner as one parameter, a :class:`RunnerSpec` (a deployment stores it as JSON:
``{"kind": "threads"|"processes"|"dask", "workers": N, "dask_address": ...}``), and open the runner
themselves for the per-movie tasks with :func:`open_task_runner`: one task per movie
(:mod:`pipeline.movie_job`), which decodes and labels its movie where it runs.

* ``threads`` (default): :class:`prefect.task_runners.ThreadPoolTaskRunner`. OpenCV's optical
  flow and PyTorch release the GIL, so threads scale on one machine without pickling frames.
* ``processes``: :class:`prefect.task_runners.ProcessPoolTaskRunner` (Prefect >= 3.4); each movie's
  job (paths and configuration) is pickled to a worker process. Use it when a backend holds the GIL.
* ``dask``: :class:`prefect_dask.DaskTaskRunner`. With ``dask_address`` (``tcp://host:8786``)
  it connects to a running scheduler whose workers may sit on other machines; the dataset
  folder must then be on storage every worker sees at the same path (NFS, a shared volume).
  Without an address it starts a ``LocalCluster`` of ``workers`` processes.

Everything a task receives must pickle: a movie task receives a :class:`pipeline.movie_job.MovieJob`
(paths, dataclass configs, strings); frames never leave the worker that decodes them, and the
disparity backend is built inside each worker from its name (see :mod:`pipeline.ingest`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

from pipeline.errors import ConfigError

__all__ = ["RUNNERS", "RunnerSpec", "make_task_runner", "open_task_runner", "default_workers", "start_temporary_server"]

RUNNERS: tuple[str, ...] = ("threads", "processes", "dask")


def default_workers() -> int:
    """One worker per core: the disparity backends are CPU-bound and single-threaded each."""
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class RunnerSpec:
    """Which task runner to use: the flows' ``runner`` parameter (a JSON object in a deployment).

    Checked when built, so a bad value fails before any work whether it comes from the CLI, a
    Python caller or a deployment's JSON (Prefect builds it through pydantic, which calls
    ``__post_init__``).

    Attributes:
        kind: ``threads``, ``processes`` or ``dask``.
        workers: parallel tasks (threads/processes) or local Dask workers; None = one per core.
        dask_address: a running Dask scheduler (``tcp://host:8786``); only with ``kind="dask"``.
    """

    kind: str = "threads"
    workers: int | None = None
    dask_address: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in RUNNERS:
            raise ConfigError(f"unknown runner {self.kind!r}; valid runners: {', '.join(RUNNERS)}")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)):
            raise ConfigError(f"workers must be a whole number, got {self.workers!r}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.dask_address is not None and not isinstance(self.dask_address, str):
            raise ConfigError(f"dask_address must be a string such as tcp://host:8786, got {self.dask_address!r}")
        if self.dask_address and self.kind != "dask":
            raise ConfigError(f"--dask-address needs --runner dask (got --runner {self.kind})")

    @property
    def n_workers(self) -> int:
        """How many tasks run at once on a local runner (threads, processes, a ``LocalCluster``)."""
        return int(self.workers or default_workers())


def make_task_runner(
    spec: RunnerSpec | str = "threads", workers: int | None = None, dask_address: str | None = None
) -> Any:
    """Build (but do not start) a Prefect task runner for ``spec``.

    Args:
        spec: a :class:`RunnerSpec` or a runner name (then ``workers``/``dask_address`` apply).

    Returns:
        A Prefect ``TaskRunner``; use it as a context manager and ``submit(task, parameters)``,
        or pass it to ``flow.with_options(task_runner=...)``.
    """
    if isinstance(spec, str):
        spec = RunnerSpec(spec, workers, dask_address)
    if spec.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=spec.n_workers)
    if spec.kind == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=spec.n_workers)
    from prefect_dask import DaskTaskRunner

    if spec.dask_address:
        return DaskTaskRunner(address=spec.dask_address)
    # Processes, one thread each: the backends are CPU-bound; nanny processes survive a crash.
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": spec.n_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": ":0",  # any free port: several clusters may run at once
        },
    )


@contextlib.contextmanager
def open_task_runner(spec: RunnerSpec) -> Iterator[Any]:
    """Start the task runner for ``spec`` inside a flow run; close it (and its cluster) after.

    Worker processes must report to the same Prefect API as the flow. With a temporary local
    server (no ``PREFECT_API_URL`` set) each new process would otherwise start a server of its
    own, so the flow's API URL goes into the settings the runner serialises with every task, for
    this block only (:func:`prefect.settings.temporary_settings`; the process environment is
    never touched).
    """
    with _api_url_for_workers(spec), make_task_runner(spec) as runner:
        yield runner


@contextlib.contextmanager
def _api_url_for_workers(spec: RunnerSpec) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if spec.kind == "threads" or PREFECT_API_URL.value():
        yield
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        url = str(client.api_url).rstrip("/")
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


# --------------------------------------------------------------------------- the temporary API server


def _die_with_parent(parent: int) -> None:  # runs in the child between fork and exec
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: SIGTERM when the parent dies
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def start_temporary_server() -> str | None:
    """Start the temporary Prefect API a CLI run needs, tied to this process's life.

    Without ``PREFECT_API_URL`` Prefect starts a temporary server itself, and stops it only at a
    clean interpreter exit: a CLI killed with SIGKILL, or SIGTERM without a handler, leaves a
    ~230 MB server running. This starts the same server (Prefect's own uvicorn command) with the
    kernel's parent-death signal set, so it goes with its CLI however the CLI ends, and exports
    its URL so every client in this process (and the worker processes it starts) uses it.
    Linux only; elsewhere, and when ``PREFECT_API_URL`` is set, it does nothing.

    Returns:
        The API URL of the started server, or None.
    """
    import atexit
    import subprocess
    import sys

    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value() or not sys.platform.startswith("linux"):
        return None

    parent = os.getpid()

    class _OwnedServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen:
            # Prefect 3's own command and environment, plus the parent-death signal.
            env = {
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            }
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    str(prefect.__module_path__.parent),
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
                env=env,
                preexec_fn=lambda: _die_with_parent(parent),
            )

    server = _OwnedServer(port=None)
    server.start()  # registers its own clean stop at exit
    os.environ["PREFECT_API_URL"] = server.api_url  # worker processes
    settings = temporary_settings(updates={PREFECT_API_URL: server.api_url})  # this process, for its life
    settings.__enter__()
    atexit.register(os.environ.pop, "PREFECT_API_URL", None)
    return server.api_url
