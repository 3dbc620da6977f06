"""What a flow run shows in the Prefect UI: markdown reports, tables, previews, progress.

The markdown is built by pure functions (testable without Prefect, reusable by the CLI); the
``publish_*`` helpers hand it to Prefect. Preview images are small PNGs embedded as base64 data
URIs, so a report stays readable after the dataset moves and needs no file server.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any, Iterable, Sequence
from uuid import UUID

import cv2
import numpy as np

__all__ = [
    "artifact_key",
    "png_data_uri",
    "markdown_table",
    "publish_markdown",
    "ProgressArtifact",
]


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from free text."""
    key = "-".join(re.sub(r"[^a-z0-9]+", "-", str(p).lower()).strip("-") for p in parts if p)
    return key[:200] or "depthmine"


def png_data_uri(image: np.ndarray, max_height: int = 120) -> str:
    """An RGB image as a ``data:image/png;base64,...`` URI, downscaled to ``max_height``."""
    img = np.ascontiguousarray(image)
    if img.shape[0] > max_height:
        w = max(1, round(img.shape[1] * max_height / img.shape[0]))
        img = cv2.resize(img, (w, max_height), interpolation=cv2.INTER_AREA)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - cv2 encodes any uint8 image
        raise RuntimeError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], max_rows: int = 200) -> str:
    """A GitHub-flavoured markdown table; rows past ``max_rows`` are summarised in one line."""
    rows = list(rows)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows[:max_rows]]
    if len(rows) > max_rows:
        lines.append(f"\n... and {len(rows) - max_rows} more rows")
    return "\n".join(lines)


def publish_markdown(key: str, markdown: str, description: str | None = None) -> UUID | None:
    """Attach a markdown artifact to the current flow/task run (no-op outside a run)."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return None
    return create_markdown_artifact(markdown=markdown, key=artifact_key(key), description=description)


class ProgressArtifact:
    """A Prefect progress artifact updated at most every ``min_interval_s`` (API calls are not free).

    Outside a flow or task run it does nothing, so library-style callers can use it
    unconditionally. Inside a task running on a Dask or process worker it reports from there.
    """

    def __init__(self, key: str, description: str | None = None, min_interval_s: float = 2.0):
        from prefect.context import FlowRunContext, TaskRunContext

        self._id: UUID | None = None
        self._last = 0.0
        self._min = min_interval_s
        self._shown = -1.0
        if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
            from prefect.artifacts import create_progress_artifact

            self._id = create_progress_artifact(0.0, key=artifact_key(key), description=description)

    def update(self, fraction: float, force: bool = False) -> None:
        """Report progress in [0, 1]."""
        if self._id is None:
            return
        pct = float(min(max(fraction, 0.0), 1.0) * 100.0)
        now = time.monotonic()
        if pct == self._shown or (not force and now - self._last < self._min):
            return
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(self._id, pct)
        self._last, self._shown = now, pct
