"""Zero-shot evaluation: checkpoints x benchmarks -> the paper's table.

:func:`evaluate` runs one model over benchmarks given as ``(name, path)`` pairs and returns an
:class:`EvalReport` (per-benchmark mean of the protocol's metric plus every per-image number).
:func:`compare` lays several reports side by side in the paper's column order (DIW, ETH3D,
Sintel, KITTI, NYU, TUM, then the movie test split) and, against a baseline, gives each cell's
relative improvement in percent, ``100 * (baseline - value) / baseline``, positive = better
(every metric is an error), with the mean improvement over benchmarks as the paper's tables do.
:func:`write_report` writes the table as CSV and markdown, the per-image errors as CSV, a plot of
them, and a JSON of everything.

Scoring of one image follows docs/METHOD.md §4 (see :mod:`training.metrics`): the prediction,
resized back to the ground truth's resolution, is aligned by least squares in disparity space,
converted to depth and capped; DIW is scored by WHDR on its ordinal pair without alignment.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from pipeline.atomic import atomic_open, atomic_path, write_json_atomic
from pipeline.errors import BadInputError, ConfigError
from training import metrics
from training.benchmarks import PROTOCOLS, BenchmarkSample, Protocol, get_protocol, open_benchmark
from training.predict import DepthPredictor

__all__ = [
    "ImageResult",
    "BenchmarkResult",
    "EvalReport",
    "ComparisonTable",
    "parse_dataset_spec",
    "score_sample",
    "evaluate",
    "compare",
    "write_report",
    "unique_labels",
    "run_label",
]

log = logging.getLogger(__name__)


@dataclass
class ImageResult:
    """The metrics of one test image."""

    sample_id: str
    metrics: dict[str, float]


@dataclass
class BenchmarkResult:
    """One benchmark's outcome for one model.

    Attributes:
        benchmark: protocol name (``kitti``).
        metric: the protocol's table metric; ``value`` is its mean over scored images.
        means: the mean of every metric computed (the table metric included).
        n_images: images scored; ``n_skipped`` had no valid ground truth (metric is NaN).
        path: where the benchmark was read from.
    """

    benchmark: str
    metric: str
    value: float
    means: dict[str, float]
    n_images: int
    n_skipped: int
    path: str
    per_image: list[ImageResult] = field(default_factory=list)


@dataclass
class EvalReport:
    """All benchmarks of one model (``label`` names it in tables: see :func:`run_label`)."""

    label: str
    checkpoint: str | None
    results: dict[str, BenchmarkResult]
    seconds: float = 0.0

    def value(self, benchmark: str) -> float:
        r = self.results.get(benchmark)
        return r.value if r else math.nan

    def to_dict(self) -> dict:
        return asdict(self)


def parse_dataset_spec(spec: str) -> tuple[str, str]:
    """``"NAME:PATH"`` -> ``(name, path)``; the name must be a registered benchmark."""
    name, sep, path = spec.partition(":")
    if not sep or not name or not path:
        raise ConfigError(
            f"--dataset {spec!r}: expected NAME:PATH, e.g. kitti:/data/kitti (names: {', '.join(PROTOCOLS)})"
        )
    get_protocol(name)  # validates the name
    return name.strip().lower(), path


def score_sample(protocol: Protocol, sample: BenchmarkSample, prediction: np.ndarray) -> dict[str, float]:
    """The metrics of one sample given the model's disparity at the ground truth's resolution."""
    if protocol.ground_truth == "ordinal":
        return {"whdr": metrics.whdr(prediction, sample.point_pairs or [])}
    if protocol.ground_truth == "disparity":
        return metrics.evaluate_disparity(
            prediction, sample.disparity, _cropped(protocol, sample.valid, sample.disparity.shape)
        )
    depth = np.asarray(sample.depth)
    mask = _cropped(protocol, sample.valid, depth.shape) & np.isfinite(depth) & (depth > 0)
    if protocol.max_gt_depth is not None:
        mask &= depth <= protocol.max_gt_depth
    return metrics.evaluate_depth(prediction, depth, mask, protocol.depth_cap)


def _cropped(protocol: Protocol, valid: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """The valid mask (all True when absent) limited to the protocol's crop."""
    mask = np.ones(shape[:2], bool) if valid is None else np.asarray(valid, bool).copy()
    if protocol.crop is not None:
        top, bottom, left, right = protocol.crop
        keep = np.zeros_like(mask)
        keep[top:bottom, left:right] = True
        mask &= keep
    return mask


def _as_predictor(checkpoint_or_model, device) -> tuple[DepthPredictor, str, str | None]:
    if isinstance(checkpoint_or_model, DepthPredictor):
        return checkpoint_or_model, "model", None
    if isinstance(checkpoint_or_model, torch.nn.Module):
        return DepthPredictor(checkpoint_or_model, device), "model", None
    path = Path(checkpoint_or_model)
    return DepthPredictor.from_checkpoint(path, device), run_label(path), str(path)


def run_label(checkpoint: str | Path) -> str:
    """A table row name for a checkpoint: the run folder for the trainer's layout
    (``runs/a/checkpoints/final.pt`` -> ``a/final``), else the file stem (``midas_v21.pt`` ->
    ``midas_v21``)."""
    path = Path(checkpoint)
    if path.parent.name == "checkpoints" and path.parent.parent.name:
        return f"{path.parent.parent.name}/{path.stem}"
    return path.stem


def evaluate(
    checkpoint_or_model: str | Path | torch.nn.Module | DepthPredictor,
    datasets: Mapping[str, str | Path] | Iterable[tuple[str, str | Path] | str],
    *,
    device: str | None = "auto",
    max_images: int | None = None,
    label: str | None = None,
    batch_size: int = 4,
    progress: bool = True,
    temporal_align: bool = False,
) -> EvalReport:
    """Evaluate one model zero-shot on several benchmarks.

    Args:
        checkpoint_or_model: a checkpoint path (loaded with :func:`training.checkpoint.load_model`),
            a ``DepthModel`` or a :class:`DepthPredictor`.
        datasets: ``{name: path}``, ``[(name, path), ...]`` or ``["name:path", ...]``.
        device: ``"auto"`` uses the GPU when present.
        max_images: score at most this many images per benchmark (quick looks; not the protocol).
        label: the row name in tables (default: :func:`run_label` of the checkpoint).
        batch_size: consecutive images of one size (and ground-truth size) share a forward pass.
        progress: show a progress bar per benchmark.
        temporal_align: clips benchmarks: align each frame's prediction to its predecessor's
            along the flow first (what ``depthmine predict --temporal`` does; the flow is computed
            from the frames, as predict does).

    A ``movies`` dataset ingested in clips mode is also scored as ``movies_temporal`` (the
    temporal error of its test clips, docs/METHOD.md §5), beside the per-frame metric.
    """
    from tqdm import tqdm

    predictor, default_label, ckpt = _as_predictor(checkpoint_or_model, device)
    pairs = _dataset_pairs(datasets)
    started = time.perf_counter()
    results: dict[str, BenchmarkResult] = {}
    pairs = _with_temporal(pairs)
    for name, path in pairs:
        proto = get_protocol(name)
        if proto.clips:
            results[name] = _evaluate_clips(predictor, proto, path, max_images, progress, temporal_align)
            log.info("%s on %s: %s = %.4g", default_label, name, proto.metric, results[name].value)
            continue
        loader = open_benchmark(name, path)
        try:
            total = len(loader)
        except TypeError:
            total = None
        if max_images is not None:
            total = min(total, max_images) if total is not None else max_images
        per_image: list[ImageResult] = []
        samples = itertools.islice(loader, max_images) if max_images is not None else iter(loader)
        bar = tqdm(total=total, desc=f"eval {name}", unit="img", disable=not progress, leave=False)
        for group in _same_size_groups(_prefetch(samples), batch_size):
            h, w = group[0].image.shape[:2]
            preds = predictor.predict_batch(
                [s.image for s in group], input_size=proto.input_size(h, w), output_size=_gt_shape(group[0])
            )
            for sample, pred in zip(group, preds):
                per_image.append(ImageResult(sample.sample_id, score_sample(proto, sample, pred)))
            bar.update(len(group))
        bar.close()
        if not per_image:
            hint = "assign held-out movies to the test split when building the dataset" if name == "movies" else None
            raise BadInputError(path, f"no {proto.title} test images found", hint)
        results[name] = _summarise(proto, str(path), per_image)
        log.info(
            "%s on %s: %s = %.4g over %d images", default_label, name, proto.metric, results[name].value, len(per_image)
        )
    return EvalReport(label or default_label, ckpt, results, time.perf_counter() - started)


def _with_temporal(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``movies`` pairs of clips-mode datasets gain a ``movies_temporal`` pair right after them."""
    from training.benchmarks.movies import MoviesTemporalLoader

    out: list[tuple[str, str]] = []
    named = {n for n, _ in pairs}
    for name, path in pairs:
        out.append((name, path))
        if name == "movies" and "movies_temporal" not in named:
            try:
                if MoviesTemporalLoader(path).has_clips():
                    out.append(("movies_temporal", path))
            except BadInputError:
                pass  # the per-frame pass reports what is wrong with the dataset
    return out


def _evaluate_clips(
    predictor: DepthPredictor, proto: Protocol, path: str, max_clips: int | None, progress: bool, align: bool
) -> BenchmarkResult:
    """The temporal error of every test clip (one :class:`ImageResult` per clip)."""
    from tqdm import tqdm

    from training.benchmarks.movies import MoviesTemporalLoader
    from training.temporal import temporal_align_sequence, temporal_consistency

    per_clip: list[ImageResult] = []
    clips = iter(MoviesTemporalLoader(path))
    if max_clips is not None:
        clips = itertools.islice(clips, max_clips)
    for clip in tqdm(clips, desc=f"eval {proto.name}", unit="clip", disable=not progress, leave=False):
        images = list(clip["image"])
        h, w = images[0].shape[:2]
        preds = predictor.predict_batch(images, input_size=proto.input_size(h, w), output_size=(h, w))
        if align:
            preds = np.stack(temporal_align_sequence(images, list(preds)))
        scores = temporal_consistency(
            preds, clip["disparity"], clip["valid"], clip.get("temporal_flow"), clip.get("temporal_flow_valid")
        )
        per_clip.append(ImageResult(f"{clip['movie_id']}/clip{clip['clip_id']:05d}", scores))
    if not per_clip:
        raise BadInputError(path, "no test clips found", "ingest held-out movies as test with sampling.mode=clips")
    return _summarise(proto, str(path), per_clip)


def _same_size_groups(samples: Iterable[BenchmarkSample], batch_size: int) -> Iterator[list[BenchmarkSample]]:
    """Consecutive samples with equal image and ground-truth sizes, at most ``batch_size`` at a time."""
    group: list[BenchmarkSample] = []
    key = None
    for s in samples:
        k = (s.image.shape, _gt_shape(s))
        if group and (k != key or len(group) >= max(1, batch_size)):
            yield group
            group = []
        group.append(s)
        key = k
    if group:
        yield group


def _prefetch(samples: Iterator[BenchmarkSample], depth: int = 4) -> Iterator[BenchmarkSample]:
    """Read (decode) the next samples in a background thread while the model and metrics run.

    Loader errors are re-raised in the caller; stopping early lets the thread finish at its next put.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for s in samples:
                while not stop.is_set():
                    try:
                        q.put(s, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item: object = done
        except BaseException as exc:  # handed to the consumer, which raises it
            item = exc
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=work, name="eval-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _gt_shape(sample: BenchmarkSample) -> tuple[int, int]:
    for arr in (sample.depth, sample.disparity, sample.valid):
        if arr is not None:
            return tuple(np.shape(arr)[:2])  # type: ignore[return-value]
    return tuple(sample.image.shape[:2])  # type: ignore[return-value]


def _dataset_pairs(datasets) -> list[tuple[str, str]]:
    if isinstance(datasets, Mapping):
        items = list(datasets.items())
    else:
        items = [parse_dataset_spec(d) if isinstance(d, str) else tuple(d) for d in datasets]
    out = []
    for name, path in items:
        get_protocol(name)
        out.append((name.strip().lower(), str(path)))
    if not out:
        raise ConfigError("no benchmark given: pass at least one --dataset NAME:PATH")
    return out


def _summarise(proto: Protocol, path: str, per_image: list[ImageResult]) -> BenchmarkResult:
    keys = sorted({k for r in per_image for k in r.metrics})
    means = {}
    for k in keys:
        vals = np.array([r.metrics.get(k, math.nan) for r in per_image], np.float64)
        vals = vals[np.isfinite(vals)]
        means[k] = float(vals.mean()) if vals.size else math.nan
    scored = sum(1 for r in per_image if math.isfinite(r.metrics.get(proto.metric, math.nan)))
    return BenchmarkResult(
        benchmark=proto.name,
        metric=proto.metric,
        value=means.get(proto.metric, math.nan),
        means=means,
        n_images=scored,
        n_skipped=len(per_image) - scored,
        path=path,
        per_image=per_image,
    )


# ---------------------------------------------------------------------------------------------
# tables


@dataclass
class ComparisonTable:
    """Rows = models, columns = benchmarks (paper order); optional improvement over a baseline."""

    columns: list[str]
    rows: list[tuple[str, list[float]]]
    baseline: str | None = None
    improvements: list[list[float]] | None = None  # per row, per column, percent (positive = better)
    baseline_row: int | None = None  # index of the baseline's row (0 when there is one)

    def _header(self) -> list[str]:
        titles = [
            f"{PROTOCOLS[c].title} ({metrics.METRIC_NAMES.get(PROTOCOLS[c].metric, PROTOCOLS[c].metric)})"
            for c in self.columns
        ]
        return ["model"] + titles + (["mean Δ% vs " + self.baseline] if self.improvements else [])

    def _cells(self) -> list[list[str]]:
        out = []
        for r, (label, values) in enumerate(self.rows):
            cells = [label]
            for c, v in enumerate(values):
                text = _fmt(self.columns[c], v)
                if self.improvements and r != self.baseline_row:
                    imp = self.improvements[r][c]
                    if math.isfinite(imp):
                        text += f" ({imp:+.1f}%)"
                cells.append(text)
            if self.improvements:
                cells.append("" if r == self.baseline_row else f"{_nanmean(self.improvements[r]):+.1f}%")
            out.append(cells)
        return out

    def to_text(self) -> str:
        """A fixed-width table for the terminal."""
        header, cells = self._header(), self._cells()
        widths = [max(len(str(x)) for x in col) for col in zip(header, *cells)]

        def line(row):
            return "  ".join(
                str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(row, widths))
            )

        lines = [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in cells]
        lines.append(
            "All metrics are errors (lower is better)"
            + ("; Δ% = improvement over the baseline." if self.improvements else ".")
        )
        return "\n".join(lines)

    def to_markdown(self) -> str:
        header, cells = self._header(), self._cells()
        out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in cells]
        out.append("")
        out.append(
            "All metrics are errors (lower is better)"
            + ("; in brackets: relative improvement over the baseline." if self.improvements else ".")
        )
        return "\n".join(out) + "\n"

    def csv_rows(self) -> list[dict[str, object]]:
        rows = []
        for r, (label, values) in enumerate(self.rows):
            row: dict[str, object] = {"model": label}
            for c, v in enumerate(values):
                row[self.columns[c]] = v
                if self.improvements:
                    row[f"{self.columns[c]}_improvement_pct"] = self.improvements[r][c]
            if self.improvements:
                row["mean_improvement_pct"] = _nanmean(self.improvements[r])
            rows.append(row)
        return rows


def _fmt(column: str, v: float) -> str:
    if not math.isfinite(v):
        return "-"
    metric = PROTOCOLS[column].metric
    if metric in ("rmse_unit_disparity", "temporal_error"):
        return f"{v:.4f}"
    return f"{v:.3f}" if metric == "abs_rel" else f"{v:.2f}"


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def compare(reports: Sequence[EvalReport], baseline: EvalReport | None = None) -> ComparisonTable:
    """Side-by-side table; with ``baseline`` (listed first), each cell's improvement over it."""
    all_reports = ([baseline] if baseline is not None else []) + [r for r in reports if r is not baseline]
    present = {b for r in all_reports for b in r.results}
    columns = [name for name in PROTOCOLS if name in present]
    rows = [
        (label, [r.value(c) for c in columns])
        for label, r in zip(unique_labels([r.label for r in all_reports]), all_reports)
    ]
    improvements = None
    if baseline is not None:
        improvements = []
        for _, values in rows:
            imp = []
            for c, v in zip(columns, values):
                b = baseline.value(c)
                imp.append(100.0 * (b - v) / b if math.isfinite(b) and math.isfinite(v) and b != 0 else math.nan)
            improvements.append(imp)
    return ComparisonTable(
        columns, rows, rows[0][0] if baseline is not None else None, improvements, 0 if baseline is not None else None
    )


def unique_labels(labels: Sequence[str]) -> list[str]:
    """The labels with repeats made distinct (``a``, ``a (2)``, ...): two rows never share a name,
    so per-image rows, Δ% cells and plot legends stay attributable."""
    out: list[str] = []
    used: set[str] = set()
    for label in labels:
        name, n = label, 2
        while name in used:
            name, n = f"{label} ({n})", n + 1
        used.add(name)
        out.append(name)
    return out


def write_report(
    reports: Sequence[EvalReport], out_dir: str | Path, baseline: EvalReport | None = None, plot: bool = True
) -> dict[str, Path]:
    """Write ``table.csv``, ``table.md``, ``per_image.csv``, ``report.json`` and ``per_image_errors.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = compare(reports, baseline)
    everything = ([baseline] if baseline is not None else []) + [r for r in reports if r is not baseline]
    names = unique_labels([r.label for r in everything])
    paths = {
        "table_md": out / "table.md",
        "table_csv": out / "table.csv",
        "per_image_csv": out / "per_image.csv",
        "json": out / "report.json",
    }
    with atomic_open(paths["table_md"], "w", encoding="utf-8") as fh:
        fh.write(table.to_markdown())
    rows = table.csv_rows()
    with atomic_open(paths["table_csv"], "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_open(paths["per_image_csv"], "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["model", "benchmark", "sample_id", "metric", "value"])
        for label, rep in zip(names, everything):
            for name, res in rep.results.items():
                for img in res.per_image:
                    for k, v in sorted(img.metrics.items()):
                        writer.writerow([label, name, img.sample_id, k, f"{v:.6g}"])
    write_json_atomic(
        paths["json"],
        {
            "baseline": names[0] if baseline is not None else None,
            "reports": [_json_safe({**r.to_dict(), "label": label}) for label, r in zip(names, everything)],
        },
    )
    if plot:
        paths["plot"] = _plot_per_image(everything, out / "per_image_errors.png", names)
    return paths


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def _plot_per_image(reports: Sequence[EvalReport], path: Path, names: Sequence[str] | None = None) -> Path:
    """One panel per benchmark: each model's per-image errors sorted ascending (lower curve = better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in PROTOCOLS if any(n in r.results for r in reports)]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        proto = PROTOCOLS[name]
        for label, rep in zip(names or [r.label for r in reports], reports):
            res = rep.results.get(name)
            if res is None:
                continue
            vals = np.sort([r.metrics.get(proto.metric, math.nan) for r in res.per_image])
            vals = vals[np.isfinite(vals)]
            ax.plot(
                np.linspace(0, 100, len(vals)) if len(vals) > 1 else [50],
                vals,
                marker="." if len(vals) < 30 else None,
                label=label,
            )
        ax.set_title(f"{proto.title}: {metrics.METRIC_NAMES.get(proto.metric, proto.metric)}")
        ax.set_xlabel("images, sorted (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("per-image error")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
