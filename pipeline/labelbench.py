"""Label quality against ground truth: real stereo pairs in, scores and pictures out.

The labels are the product, so they are measured the way a user would judge them: on real
rectified stereo pairs with ground-truth disparity, by how many of the pixels with ground truth
become labels (``kept``; 0 for a rejected frame) and how many of those labels are wrong by more
than 1, 2 or 4 px (``bad1``/``bad2``/``bad4``), with the end-point error and the time per megapixel.
``sparsification`` says whether the uncertainty ranks errors: bad-2 among the 25/50/75% most
certain kept pixels.

A pair folder holds, per pair ``NAME``: ``NAME_left.png`` and ``NAME_right.png`` (8-bit RGB) and
``NAME_disp.npz`` with ``disparity`` (float, the left view's disparity in the project's convention,
NaN where unknown). :func:`load_pairs` refuses anything else with one line naming the file.
``bench/bench_labels.py`` prints the tables; the test suite holds the default to its floors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from pipeline.errors import BadInputError

__all__ = [
    "GroundTruthPair",
    "PairScore",
    "PooledScore",
    "SPARSIFICATION_LEVELS",
    "load_pairs",
    "score_label",
    "pool_scores",
    "label_pairs",
    "error_picture",
]

#: Shares of the kept pixels, most certain first, at which bad-2 is reported.
SPARSIFICATION_LEVELS = (0.25, 0.50, 0.75)


@dataclass
class GroundTruthPair:
    """One rectified stereo pair with the left view's ground-truth disparity (NaN unknown)."""

    name: str
    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray

    @property
    def megapixels(self) -> float:
        return self.left.shape[0] * self.left.shape[1] / 1e6


@dataclass
class PairScore:
    """Counts for one pair (pool them with :func:`pool_scores`; shares are properties).

    ``kept`` counts ground-truth pixels that are labels; a rejected frame keeps none.
    ``sparse_bad2[i]`` / ``sparse_kept[i]`` are bad-2 counts among the most certain
    ``SPARSIFICATION_LEVELS[i]`` of the kept pixels.
    """

    name: str
    known: int
    kept: int
    bad1: int
    bad2: int
    bad4: int
    abs_error_sum: float
    rejected_reason: str | None
    seconds: float
    megapixels: float
    cpu_seconds: float = 0.0
    sparse_kept: list[int] = field(default_factory=list)
    sparse_bad2: list[int] = field(default_factory=list)
    kept_if_accepted: int = 0

    @property
    def kept_share(self) -> float:
        return self.kept / self.known if self.known else 0.0

    def bad_share(self, px: int = 2) -> float:
        return {1: self.bad1, 2: self.bad2, 4: self.bad4}[px] / self.kept if self.kept else 0.0

    @property
    def cpu_ms_per_mpx(self) -> float:
        """Processor time (all threads) per Mpx: what the work costs, whatever else runs."""
        return 1000.0 * self.cpu_seconds / self.megapixels if self.megapixels else float("nan")

    @property
    def epe(self) -> float:
        return self.abs_error_sum / self.kept if self.kept else float("nan")

    @property
    def ms_per_mpx(self) -> float:
        return 1000.0 * self.seconds / self.megapixels if self.megapixels else float("nan")

    def sparse_bad2_share(self, i: int) -> float:
        return self.sparse_bad2[i] / self.sparse_kept[i] if self.sparse_kept and self.sparse_kept[i] else 0.0


@dataclass
class PooledScore(PairScore):
    """Pixels of every pair pooled; ``worst_bad2`` is the largest per-pair bad-2 share."""

    pairs: int = 0
    rejected: int = 0
    worst_bad2: float = 0.0
    worst_pair: str = ""


def _read_rgb(path: Path) -> np.ndarray:
    if not path.is_file():
        raise BadInputError(path, "missing", "each pair needs NAME_left.png, NAME_right.png and NAME_disp.npz")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise BadInputError(path, "not a readable image")
    if img.dtype != np.uint8:
        raise BadInputError(
            path, f"{img.dtype} image; the benchmark takes 8-bit RGB", "convert it to 8 bits per channel"
        )
    if img.ndim == 2 or img.shape[2] == 1:
        raise BadInputError(
            path, "grey image; the benchmark takes 8-bit RGB", "the labeller and the sky test need colour"
        )
    if img.shape[2] == 4:
        img = img[..., :3]
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_disparity(path: Path, shape: tuple[int, int]) -> np.ndarray:
    if not path.is_file():
        raise BadInputError(path, "missing", "each pair needs NAME_left.png, NAME_right.png and NAME_disp.npz")
    try:
        with np.load(path) as data:
            if "disparity" not in data:
                raise BadInputError(path, f"no 'disparity' array (has {sorted(data.files)})")
            disparity = np.asarray(data["disparity"], np.float32)
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"not a readable .npz ({exc})") from exc
    if disparity.shape != shape:
        raise BadInputError(path, f"disparity is {disparity.shape[::-1]} but the left image is {shape[::-1]} (WxH)")
    return np.where(np.isfinite(disparity), disparity, np.nan).astype(np.float32)


def load_pairs(folder: str | Path, names: Iterable[str] | None = None) -> list[GroundTruthPair]:
    """Every pair of ``folder`` (``NAME_disp.npz`` names a pair), sorted by name.

    Args:
        folder: the pair folder.
        names: only these pairs (each must exist).

    Raises:
        BadInputError: a missing folder or file, an unreadable, grey or 16-bit image, views of
            different sizes, a disparity file without ``disparity`` or of another size.
    """
    root = Path(folder)
    if not root.is_dir():
        raise BadInputError(root, "no such folder of stereo pairs")
    found = sorted(p.name[: -len("_disp.npz")] for p in root.glob("*_disp.npz"))
    wanted = list(names) if names is not None else found
    if not wanted:
        raise BadInputError(root, "no NAME_disp.npz files", "a pair is NAME_left.png, NAME_right.png, NAME_disp.npz")
    pairs = []
    for name in wanted:
        left = _read_rgb(root / f"{name}_left.png")
        right = _read_rgb(root / f"{name}_right.png")
        if left.shape != right.shape:
            raise BadInputError(
                root / f"{name}_right.png",
                f"{right.shape[1]}x{right.shape[0]} but the left view is {left.shape[1]}x{left.shape[0]}",
                "both views of a pair must have the same size",
            )
        disparity = _read_disparity(root / f"{name}_disp.npz", left.shape[:2])
        pairs.append(GroundTruthPair(name, left, right, disparity))
    return pairs


def score_label(
    name: str, result: object, truth: np.ndarray, seconds: float = 0.0, megapixels: float | None = None
) -> PairScore:
    """Score one :class:`pipeline.disparity.DisparityResult` against ground truth (NaN unknown)."""
    known = np.isfinite(truth)
    valid = np.asarray(result.valid, bool) & known
    err = np.abs(np.asarray(result.disparity, np.float32) - truth)[valid]
    unc = np.asarray(result.uncertainty, np.float32)[valid]
    order = np.argsort(unc, kind="stable")
    sparse_kept, sparse_bad2 = [], []
    for level in SPARSIFICATION_LEVELS:
        top = order[: int(round(level * order.size))]
        sparse_kept.append(int(top.size))
        sparse_bad2.append(int((err[top] > 2.0).sum()))
    rejected = getattr(result, "rejected_reason", None)
    scale = 0 if rejected else 1
    return PairScore(
        name=name,
        known=int(known.sum()),
        kept=int(valid.sum()) * scale,
        bad1=int((err > 1.0).sum()) * scale,
        bad2=int((err > 2.0).sum()) * scale,
        bad4=int((err > 4.0).sum()) * scale,
        abs_error_sum=float(err.sum()) * scale,
        rejected_reason=rejected,
        seconds=float(seconds),
        megapixels=float(megapixels if megapixels is not None else truth.size / 1e6),
        sparse_kept=[k * scale for k in sparse_kept],
        sparse_bad2=[b * scale for b in sparse_bad2],
        kept_if_accepted=int(valid.sum()),
    )


def pool_scores(scores: Sequence[PairScore]) -> PooledScore:
    """Pixels of all pairs pooled (each pair weighs by its pixels with ground truth)."""
    n = len(SPARSIFICATION_LEVELS)
    worst = max(scores, key=lambda s: s.bad_share(2), default=None)
    return PooledScore(
        name="pooled",
        known=sum(s.known for s in scores),
        kept=sum(s.kept for s in scores),
        bad1=sum(s.bad1 for s in scores),
        bad2=sum(s.bad2 for s in scores),
        bad4=sum(s.bad4 for s in scores),
        abs_error_sum=sum(s.abs_error_sum for s in scores),
        rejected_reason=None,
        seconds=sum(s.seconds for s in scores),
        megapixels=sum(s.megapixels for s in scores),
        cpu_seconds=sum(s.cpu_seconds for s in scores),
        sparse_kept=[sum(s.sparse_kept[i] for s in scores) for i in range(n)],
        sparse_bad2=[sum(s.sparse_bad2[i] for s in scores) for i in range(n)],
        kept_if_accepted=sum(s.kept_if_accepted for s in scores),
        pairs=len(scores),
        rejected=sum(1 for s in scores if s.rejected_reason),
        worst_bad2=worst.bad_share(2) if worst else 0.0,
        worst_pair=worst.name if worst else "",
    )


def label_pairs(
    pairs: Sequence[GroundTruthPair], config: object, backend: object | None = None, sky_masker: object | None = None
) -> list[tuple[PairScore, object]]:
    """Label every pair with ``config`` (a :class:`pipeline.disparity.DisparityConfig`) and score it.

    The time covers everything the labeller does for the pair: flow both ways, the matcher, checks
    and sky. Engines are built (and warmed on the first pair) before any pair is timed.
    """
    from pipeline.disparity import Labeller

    labeller = Labeller(config, backend=backend, sky_masker=sky_masker)
    out = []
    if pairs:  # warm-up: lazy engines, thread pools
        labeller.label([pairs[0].left], [pairs[0].right])
    for pair in pairs:
        t0, c0 = time.perf_counter(), time.process_time()
        result = labeller.label([pair.left], [pair.right])[0]
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        score = score_label(pair.name, result, pair.disparity, seconds, pair.megapixels)
        score.cpu_seconds = cpu
        out.append((score, result))
    return out


def error_picture(pair: GroundTruthPair, result: object, score: PairScore | None = None) -> np.ndarray:
    """Image | label (coloured, invalid black) | error map (green <= 1 px, yellow <= 2, red > 2 px,
    grey where there is no ground truth or no label) | valid mask, side by side."""
    from pipeline.viz import colorize_disparity, colorize_mask, hstack_tiles, label_tile

    known = np.isfinite(pair.disparity)
    valid = np.asarray(result.valid, bool)
    err = np.abs(np.asarray(result.disparity, np.float32) - np.nan_to_num(pair.disparity))
    emap = np.full(pair.disparity.shape + (3,), 64, np.uint8)
    both = known & valid
    emap[both & (err <= 1)] = (40, 180, 60)
    emap[both & (err > 1) & (err <= 2)] = (230, 200, 40)
    emap[both & (err > 2)] = (230, 30, 30)
    title = (
        pair.name
        if score is None
        else (
            f"{pair.name}: kept {score.kept_share:.0%}, bad-2 {score.bad_share(2):.1%}"
            + (f", REJECTED {score.rejected_reason}" if score.rejected_reason else "")
        )
    )
    lo, hi = np.nanpercentile(pair.disparity, [2, 98]) if known.any() else (None, None)
    return hstack_tiles(
        [
            label_tile(pair.left, title),
            label_tile(colorize_disparity(result.disparity, valid, vmin=lo, vmax=hi), "label"),
            label_tile(emap, "error: green<=1 yellow<=2 red>2 px"),
            label_tile(colorize_mask(valid), "valid"),
        ]
    )
