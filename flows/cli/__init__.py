"""The ``depthmine`` command line.

The CLI only turns options into library calls (or flow runs); no algorithm lives here. Each
sub-command is a small module in this package exposing ``register(subparsers)``, which adds its
parser and sets ``func``; ``COMMANDS`` lists them in the order ``--help`` shows them.

User mistakes (:class:`pipeline.errors.DepthmineError`) are printed as one line without a
traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Sequence

from pipeline.errors import DepthmineError

__all__ = ["main", "build_parser", "COMMANDS"]

# module name (flows.cli.<name>) of each sub-command, in --help order
COMMANDS: tuple[str, ...] = (
    "demo",
    "sample_movie",
    "probe",
    "shots",
    "disparity",
    "ingest",
    "build",
    "serve",
    "verify",
    "migrate",
    "inspect",
    "sql",
    "release",
    "hydrate",
    "train",
    "eval",
    "predict",
    "export",
)

DESCRIPTION = """\
depthmine mines 3D (stereo) movies into a monocular-depth training set and trains a
MiDaS-style depth model on it.

Typical use:
  depthmine sample-movie movie.mkv            # a synthetic 3D movie with known disparity
  depthmine shots movie.mkv                   # probe, shots and sampled frames
  depthmine ingest movie.mkv --out dataset/   # disparity labels into Parquet shards
  depthmine verify dataset/                   # check every shard against the manifest
  depthmine sql dataset/ "SELECT split, count(*) FROM frames GROUP BY ALL"
  depthmine train --config train.yaml         # train on the shards
  depthmine eval --checkpoint ckpt.pt --dataset movies:dataset/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depthmine",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"flows.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"flows.cli.{name}":
                continue  # a command not built yet
            raise
        module.register(sub)
    return parser


class _QuietUserErrors(logging.Filter):
    """Drop the traceback from log records about user mistakes (a bad movie, a missing file).

    Prefect's engines log every failed flow and task run with its traceback; for a
    :class:`DepthmineError` the one-line message is the whole story, and the CLI prints it again
    at the end. Real bugs keep their tracebacks.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, DepthmineError):
            record.exc_info = None
            record.exc_text = None
        return True


_PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.flow_engine", "prefect.task_engine")


_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _exit_on_sigterm():
    """SIGTERM ends the CLI like Ctrl-C: ``finally`` blocks and exit handlers run (locks, servers).

    Returns the previous handler (restored when ``main`` returns), or None off the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):  # noqa: ARG001
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def environment_defaults() -> None:
    """The CLI's process-wide defaults, set once here and nowhere at import: no Prefect telemetry, no UI.

    A value the user set wins. The commands that run flows add theirs (log level, the temporary API
    server) in :func:`flows.cli.ingest.prefect_env_defaults` when they start.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")


def main(argv: Sequence[str] | None = None) -> int:
    environment_defaults()
    for name in _PREFECT_RUN_LOGGERS:
        logging.getLogger(name).addFilter(_QuietUserErrors())
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    previous = _exit_on_sigterm()
    try:
        return int(args.func(args) or 0)
    except DepthmineError as err:
        print(f"depthmine: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # `depthmine probe ... | head`: the reader went away
        sys.stderr.close()
        return 0
    except OSError as err:
        if err.errno not in _ENVIRONMENT_ERRNOS:
            raise
        # a disk that filled up or a folder made read-only during the run: the environment, not a bug
        where = f"{err.filename}: " if err.filename else ""
        print(f"depthmine: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("depthmine: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
