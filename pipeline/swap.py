"""Swapped eyes, in one place: deciding from per-frame evidence, the ingest's report, the relabel merge.

A stereo movie whose eyes are stored the wrong way round gives disparities of the wrong sign: the sky
comes out nearer than the ground. Each labelled frame carries a ``swap_evidence`` cue (-1 normal .. +1
reversed; computed with the label in :mod:`pipeline.disparity`). Here: :func:`frame_verdict` reads one
frame's cue, :func:`decide_swapped_eyes` / :func:`detect_swapped_eyes` pool a shot's or a movie's frames
into a :class:`SwapDecision`, :func:`swap_report` makes the ingest's per-shot and per-movie
:class:`SwapReport` (``IngestConfig.swap_eyes``: one of :data:`SWAP_MODES`), and
:func:`merge_relabelled` puts the shots relabelled with the eyes exchanged in place of the originals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pipeline.disparity import DisparityResult
    from pipeline.ingest import ChunkSummary

__all__ = [
    "SWAP_MODES",
    "DEAD_ZONE",
    "SwapDecision",
    "SwapReport",
    "frame_verdict",
    "detect_swapped_eyes",
    "decide_swapped_eyes",
    "swap_report",
    "merge_relabelled",
]

#: ``IngestConfig.swap_eyes``: never relabel, always exchange the eyes, or relabel the shots found reversed
SWAP_MODES = ("never", "always", "auto")

#: frames whose ``|swap_evidence|`` is below this do not vote (and read as "undecided" alone)
DEAD_ZONE = 0.05


def frame_verdict(evidence: float, dead_zone: float = DEAD_ZONE) -> str:
    """One frame's cue in words: ``reversed``, ``normal`` or ``undecided`` (a shot decides better)."""
    if evidence >= dead_zone:
        return "reversed"
    if evidence <= -dead_zone:
        return "normal"
    return "undecided"


@dataclass
class SwapDecision:
    """Whether a shot's (or movie's) eyes are reversed, with the evidence.

    Attributes:
        swapped: the eyes look reversed.
        confidence: 0 (a coin toss or no evidence) to 1 (unanimous frames, enough of them).
        normal_frames, swapped_frames: frames whose evidence points each way.
        frames: frames pooled (including those without evidence).
        mean_evidence: the mean per-frame ``swap_evidence`` (-1 normal .. +1 swapped).
        reason: one line for logs and reports.
    """

    swapped: bool
    confidence: float
    normal_frames: int
    swapped_frames: int
    frames: int
    mean_evidence: float
    reason: str = field(default="")


def detect_swapped_eyes(
    results: Sequence[DisparityResult],
    min_frames: int = 3,
    decisive_fraction: float = 0.7,
    dead_zone: float = DEAD_ZONE,
) -> SwapDecision:
    """Decide whether a shot's or movie's eyes are reversed from its frames' ``swap_evidence``.

    Rejected frames count too: reversed eyes do not stop the sky being far.

    Args:
        results: frames of one shot or movie.
        min_frames: frames with evidence needed for full confidence (confidence scales up to it).
        decisive_fraction: the share of voting frames that must point to reversed eyes.
        dead_zone: frames with ``|evidence|`` below this do not vote.

    Returns:
        :class:`SwapDecision`; without evidence, ``swapped=False`` at confidence 0.
    """
    return decide_swapped_eyes([r.swap_evidence for r in results], min_frames, decisive_fraction, dead_zone)


def decide_swapped_eyes(
    evidence: Sequence[float | None], min_frames: int = 3, decisive_fraction: float = 0.7, dead_zone: float = DEAD_ZONE
) -> SwapDecision:
    """:func:`detect_swapped_eyes` over per-frame ``swap_evidence`` values (None/NaN: no evidence).

    For callers that kept only the evidence (the ingest's chunk summaries), not the results.
    """
    n_frames = len(evidence)
    ev = np.array([np.nan if e is None else e for e in evidence], np.float64)
    ev = ev[np.isfinite(ev)]
    voting = ev[np.abs(ev) >= dead_zone]
    n_swapped = int((voting > 0).sum())
    n_normal = int((voting < 0).sum())
    mean = float(ev.mean()) if ev.size else float("nan")
    if voting.size == 0:
        return SwapDecision(False, 0.0, 0, 0, n_frames, mean, "no frame with sky or depth layout to judge by")
    share = n_swapped / voting.size
    swapped = share >= decisive_fraction
    confidence = float(abs(2.0 * share - 1.0) * min(1.0, voting.size / float(min_frames)))
    reason = (
        f"{n_swapped} of {voting.size} frames look reversed (sky or top of frame nearer than the rest); "
        f"mean evidence {mean:+.2f}"
    )
    return SwapDecision(bool(swapped), confidence, n_normal, n_swapped, n_frames, mean, reason)


@dataclass
class SwapReport:
    """Reversed-eyes decisions of one ingest, from the chunks' per-frame ``swap_evidence``.

    Attributes:
        movie: the decision over every sampled frame of the movie.
        shots: the decision per shot id (shots with sampled frames only).
        corrected: shot ids relabelled with the eyes exchanged (``swap_eyes="auto"``).
        mode: the :attr:`IngestConfig.swap_eyes` in force.
    """

    movie: SwapDecision
    shots: dict[int, SwapDecision]
    corrected: list[int] = field(default_factory=list)
    mode: str = "never"

    @property
    def swapped_shots(self) -> list[int]:
        """Shot ids whose frames look reversed (as labelled, before any auto-correction)."""
        return sorted(sid for sid, d in self.shots.items() if d.swapped)

    def shots_to_correct(self, min_confidence: float = 0.5) -> list[int]:
        """The shots ``swap_eyes="auto"`` relabels with the eyes exchanged.

        Reversed eyes are usually a property of the whole file (an authoring error), sometimes of
        single shots (an editing error); short shots give little evidence. So: when the movie is
        decided reversed with ``min_confidence``, every shot except those decided normal with
        ``min_confidence``; otherwise only the shots decided reversed with ``min_confidence``.
        """
        if self.movie.swapped and self.movie.confidence >= min_confidence:
            return sorted(sid for sid, d in self.shots.items() if d.swapped or d.confidence < min_confidence)
        return sorted(sid for sid, d in self.shots.items() if d.swapped and d.confidence >= min_confidence)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (no NaN: a decision without evidence has ``mean_evidence`` None)."""
        return {
            "mode": self.mode,
            "movie": _decision_dict(self.movie),
            "swapped_shots": self.swapped_shots,
            "corrected_shots": list(self.corrected),
            "shots": {str(sid): _decision_dict(d) for sid, d in sorted(self.shots.items())},
        }


def _decision_dict(decision: SwapDecision) -> dict[str, Any]:
    out = dataclasses.asdict(decision)
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}


def swap_report(summaries: Iterable[ChunkSummary], mode: str = "never", corrected: Sequence[int] = ()) -> SwapReport:
    """Decide reversed eyes per shot and per movie from chunk summaries (as first labelled).

    Uses :func:`decide_swapped_eyes` with its defaults; deterministic in the
    summaries, so a resumed run reaches the same decisions from the staged markers.
    """
    per_shot: dict[int, list] = {}
    for s in sorted(summaries, key=lambda s: (s.shot_id, s.part)):
        per_shot.setdefault(int(s.shot_id), []).extend(s.swap_evidence)
    everything = [e for ev in per_shot.values() for e in ev]
    return SwapReport(
        movie=decide_swapped_eyes(everything),
        shots={sid: decide_swapped_eyes(ev) for sid, ev in per_shot.items()},
        corrected=sorted(int(c) for c in corrected),
        mode=mode,
    )


def merge_relabelled(summaries: list[ChunkSummary], relabelled: list[ChunkSummary]) -> list[ChunkSummary]:
    """The chunks a movie commits: each relabelled shot's chunks replace that shot's originals;
    ordered by (shot, part) as the shard writer expects."""
    shots = {s.shot_id for s in relabelled}
    merged = [s for s in summaries if s.shot_id not in shots] + list(relabelled)
    return sorted(merged, key=lambda s: (s.shot_id, s.part))
