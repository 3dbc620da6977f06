"""Look at a dataset: a contact sheet of random frames and tables of what is in it.

The first thing to do with a freshly built dataset is to look at it: are the images right side
up, does the coloured disparity follow the objects (near = warm), are the masks plausible, which
movies dropped most frames and why. Tables come from the manifests and the small scalar columns,
so they cost nothing even on a large dataset; only the ``n`` sampled frames are decoded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.shards.manifest import DatasetManifest, read_manifest
from pipeline.shards.reader import list_shards, open_shard, read_sample
from pipeline.viz import colorize_disparity, grid, hstack_tiles, label_tile, save_png

__all__ = [
    "DatasetSummary",
    "summarize",
    "format_summary",
    "sample_frames",
    "contact_sheet",
    "disparity_histogram",
    "inspect_dataset",
]


@dataclass
class DatasetSummary:
    """Counts from the manifest: frames per movie and split, rejections per movie and reason."""

    version: int
    frames: dict[str, dict[str, int]]  # movie_id -> split -> frames
    rejected: dict[str, dict[str, int]]  # movie_id -> reason -> frames
    shards: int
    bytes: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def total_frames(self) -> int:
        return sum(sum(v.values()) for v in self.frames.values())

    @property
    def total_rejected(self) -> int:
        return sum(sum(v.values()) for v in self.rejected.values())


def summarize(dataset: str | Path | DatasetManifest) -> DatasetSummary:
    """Counts of a published dataset, from its index alone (no movie's ``movie.json`` is read)."""
    m = dataset if isinstance(dataset, DatasetManifest) else read_manifest(dataset)
    return DatasetSummary(
        version=m.version,
        frames={mid: dict(r.split_counts) for mid, r in m.refs.items()},
        rejected={mid: dict(r.rejected_reasons) for mid, r in m.refs.items()},
        shards=sum(r.shards for r in m.refs.values()),
        bytes=sum(r.bytes for r in m.refs.values()),
        meta=dict(m.meta),
    )


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths), *map(fmt, cells[1:])])


def format_summary(s: DatasetSummary) -> str:
    """Plain-text tables: frames per movie and split, rejections by reason (per movie and total)."""
    splits = sorted(
        {k for v in s.frames.values() for k in v},
        key=lambda x: ("train", "val", "test", x).index(x) if x in ("train", "val", "test") else 9,
    )
    rows = [
        [mid, *[v.get(sp, 0) for sp in splits], sum(v.values()), sum(s.rejected.get(mid, {}).values())]
        for mid, v in sorted(s.frames.items())
    ]
    totals = [
        "TOTAL",
        *[sum(v.get(sp, 0) for v in s.frames.values()) for sp in splits],
        s.total_frames,
        s.total_rejected,
    ]
    out = [
        f"dataset version {s.version}: {len(s.frames)} movies, {s.total_frames} frames in {s.shards} shards, "
        f"{s.bytes / 1e6:.1f} MB, {s.total_rejected} frames rejected",
        "",
        "frames per movie and split",
        _table(["movie", *splits, "kept", "rejected"], rows + [totals]),
    ]
    reasons = sorted({r for v in s.rejected.values() for r in v})
    if reasons:
        by_reason = {r: sum(v.get(r, 0) for v in s.rejected.values()) for r in reasons}
        out += [
            "",
            "rejections by reason",
            _table(
                ["reason", "frames", "share"],
                [
                    [r, c, f"{100.0 * c / max(s.total_rejected, 1):.1f}%"]
                    for r, c in sorted(by_reason.items(), key=lambda kv: -kv[1])
                ],
            ),
        ]
        out += [
            "",
            "rejections per movie",
            _table(
                ["movie", *reasons], [[mid, *[v.get(r, 0) for r in reasons]] for mid, v in sorted(s.rejected.items())]
            ),
        ]
    return "\n".join(out)


def sample_frames(dataset: str | Path, n: int = 16, seed: int = 0, split: str | None = None) -> list[dict[str, Any]]:
    """``n`` distinct random frames (uniform over rows), decoded, in dataset order."""
    shards = list_shards(dataset, split=split)
    total = sum(s.rows for s in shards)
    picks = sorted(random.Random(seed).sample(range(total), min(n, total)))
    out, start, k = [], 0, 0
    for shard in shards:
        while k < len(picks) and picks[k] < start + shard.rows:
            out.append(read_sample(shard, picks[k] - start, columns=["image", "disparity", "valid", "sky"]))
            k += 1
        start += shard.rows
    return out


def _mask_tile(valid: np.ndarray, sky: np.ndarray | None) -> np.ndarray:
    tile = np.zeros(valid.shape + (3,), np.uint8)
    tile[valid] = (235, 235, 235)
    if sky is not None:
        tile[sky & valid] = (90, 150, 255)
        tile[sky & ~valid] = (30, 60, 140)
    return tile


def contact_sheet(samples: list[dict[str, Any]], tile_height: int | None = None) -> np.ndarray:
    """One row per sample: image (labelled movie/shot/frame), coloured disparity, mask (white
    valid, blue sky, black invalid)."""
    if not samples:
        return np.full((32, 32, 3), 32, np.uint8)
    h = tile_height or min(200, max(s["image"].shape[0] for s in samples))
    rows = []
    for s in samples:
        label = f"{s['movie_id']} s{s['shot_id']} f{s['frame_index']} {s['split']}"
        rows.append(
            hstack_tiles(
                [
                    label_tile(s["image"], label),
                    colorize_disparity(s["disparity"], s["valid"]),
                    _mask_tile(s["valid"], s.get("sky")),
                ],
                height=h,
            )
        )
    return grid(rows)


def _frame_stats(dataset: str | Path) -> dict[str, np.ndarray]:
    cols = ["disparity_p05", "disparity_p50", "disparity_p95", "disparity_range_px", "valid_fraction"]
    parts: dict[str, list[np.ndarray]] = {c: [] for c in cols}
    for shard in list_shards(dataset):
        pf = open_shard(shard.path)
        t = pf.read(columns=cols)
        for c in cols:
            parts[c].append(t.column(c).to_numpy())
    return {c: np.concatenate(v) if v else np.zeros(0) for c, v in parts.items()}


def disparity_histogram(dataset: str | Path, samples: list[dict[str, Any]], path: str | Path) -> Path:
    """Two panels: valid pixel disparity of the sampled frames, and per-frame p05/p50/p95 of all frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = _frame_stats(dataset)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    pix = [s["disparity"][s["valid"] & np.isfinite(s["disparity"])] for s in samples]
    pix = np.concatenate(pix) if pix else np.zeros(0)
    axes[0].hist(pix, bins=100, color="#3b6")
    axes[0].set_title(f"valid pixel disparity, {len(samples)} sampled frames")
    axes[0].set_xlabel("disparity (px of the stored image)")
    axes[0].set_ylabel("pixels")
    for name, color in (("disparity_p05", "#36c"), ("disparity_p50", "#3a3"), ("disparity_p95", "#c33")):
        if stats[name].size:
            axes[1].hist(stats[name], bins=50, alpha=0.55, color=color, label=name.split("_")[1])
    axes[1].set_title(f"per-frame disparity percentiles, {stats['disparity_p50'].size} frames")
    axes[1].set_xlabel("disparity (px)")
    axes[1].set_ylabel("frames")
    axes[1].legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


@dataclass
class InspectReport:
    summary: DatasetSummary
    text: str
    sheet: Path | None
    histogram: Path | None


def inspect_dataset(dataset: str | Path, out: str | Path | None = None, n: int = 16, seed: int = 0) -> InspectReport:
    """Tables of the dataset, and with ``out`` a contact sheet there plus ``<out stem>_hist.png``."""
    summary = summarize(dataset)
    text = format_summary(summary)
    sheet = hist = None
    if out is not None:
        samples = sample_frames(dataset, n=n, seed=seed)
        sheet = save_png(out, contact_sheet(samples))
        hist = disparity_histogram(dataset, samples, Path(out).with_name(Path(out).stem + "_hist.png"))
    return InspectReport(summary, text, sheet, hist)
