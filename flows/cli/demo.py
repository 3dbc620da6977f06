"""``depthmine demo``: the whole path on synthetic movies, in a few minutes on a laptop CPU."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from flows.cli.ingest import prefect_env_defaults

__all__ = ["register", "run_demo"]

# (movie id, split, layout, seconds, chapters, seed): splits are by movie, as in the paper. The
# first and last chapters are dropped by the sampling rules (logos, credits), hence 4 chapters.
DEMO_MOVIES = (
    ("demo-train", "train", "sbs-half", 20.0, 4, 1),
    ("demo-val", "val", "tab-half", 12.0, 4, 2),
    ("demo-test", "test", "sbs-full", 12.0, 4, 3),
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="end to end on synthetic 3D movies: movies, dataset, checks, contact sheet, a tiny model",
        description=(
            "Generate synthetic 3D movies for train, validation and test (known disparity), build the "
            "dataset from a catalog through the build_dataset flow on a temporary local Prefect server, "
            "verify every shard, write the contact sheet, then train a tiny model briefly and evaluate "
            "it on the test movie. Prints where everything is."
        ),
    )
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default demo_out)")
    p.add_argument("--size", default="320x180", metavar="WxH", help="per-eye size of the movies (default 320x180)")
    p.add_argument("--flow", default="dis-medium", metavar="NAME", help="optical-flow backend (default dis-medium)")
    p.add_argument(
        "--train-steps", type=int, default=60, metavar="N", help="training steps (0 skips training; default 60)"
    )
    p.add_argument(
        "--clips",
        action="store_true",
        help=(
            "sequence mode: ingest clips of consecutive frames with their temporal flow "
            f"({' '.join(CLIP_OVERRIDES)}), train on clips of {CLIP_TRAIN_FRAMES} frames with the temporal "
            "loss, and add the temporal error of the test clips to the evaluation (output in DIR, "
            "default demo_out_clips)"
        ),
    )
    p.set_defaults(func=run)


#: the ingest settings of ``depthmine demo --clips`` (the same as ``--set`` on ingest/build)
CLIP_OVERRIDES = ("sampling.mode=clips", "sampling.clip_frames=8", "store_temporal_flow=true")
#: frames per training clip in the demo (each stored clip of 8 gives two)
CLIP_TRAIN_FRAMES = 4


def run(args: argparse.Namespace) -> int:
    prefect_env_defaults(args.verbose)
    w, h = (int(v) for v in args.size.lower().split("x"))
    out = Path(args.out)
    if args.clips and args.out == "demo_out":
        out = Path("demo_out_clips")
    return run_demo(out, (w, h), args.flow, args.train_steps, clips=args.clips)


def run_demo(out: Path, size: tuple[int, int], flow: str, train_steps: int, clips: bool = False) -> int:
    import yaml

    from flows.build import build_dataset
    from flows.cli.build import print_summary
    from pipeline.errors import DepthmineError
    from pipeline.ingest import LabelSettings
    from pipeline.shards import inspect_dataset, verify
    from pipeline.synthetic import make_sample_movie

    t0 = time.monotonic()
    out = out.resolve()
    movies_dir, dataset = out / "movies", out / "dataset"
    print(f"[1/5] synthetic 3D movies -> {movies_dir}")
    entries = []
    for movie_id, split, layout, seconds, chapters, seed in DEMO_MOVIES:
        path = movies_dir / f"{movie_id}.mkv"
        if not path.exists():
            make_sample_movie(path, layout=layout, seconds=seconds, size=size, seed=seed, chapters=chapters)
        entries.append({"path": str(path), "movie_id": movie_id, "split": split})
        print(f"      {movie_id:<11} {split:<5} {layout:<8} {seconds:g} s  {path}")
    catalog = out / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"movies": entries}, sort_keys=False))

    mode = f"; clips: {' '.join(CLIP_OVERRIDES)}" if clips else ""
    print(f"[2/5] build_dataset flow (labels: {flow} flow + SGBM consensus{mode}) -> {dataset}")
    summary = build_dataset(
        catalog=str(catalog),
        out=str(dataset),
        labelling=LabelSettings(flow, overrides=CLIP_OVERRIDES if clips else ()),
        progress=os.isatty(2),
    )
    print_summary(summary, str(dataset))

    print("[3/5] verify")
    problems = [p for p in verify(str(dataset)) if p.severity != "warning"]
    print(
        "      every shard matches its checksum, schema and rows"
        if not problems
        else "\n".join(f"      {p}" for p in problems)
    )

    print("[4/5] contact sheet")
    report = inspect_dataset(dataset, out=out / "contact_sheet.png", n=12)
    print(report.text)

    ckpt = None
    if train_steps > 0:
        print(f"[5/5] train a tiny model for {train_steps} steps on the train movie, evaluate on the test movie")
        try:
            ckpt = _train_and_evaluate(out, dataset, train_steps, clips)
        except DepthmineError as err:  # the demo still shows the data part
            print(f"      training skipped: {err}")
    print(f"\ndone in {time.monotonic() - t0:.0f} s")
    print(f"  catalog        {catalog}")
    print(f"  dataset        {dataset}/manifest.json")
    print(f"  contact sheet  {report.sheet}")
    if report.histogram:
        print(f"  histogram      {report.histogram}")
    if ckpt:
        print(f"  checkpoint     {ckpt}")
    return 1 if problems or summary["failed"] else 0


def _train_and_evaluate(out: Path, dataset: Path, steps: int, clips: bool = False) -> str:
    from flows.train import train_model
    from training.config import resolve_config_path

    config = resolve_config_path("train_demo")  # package data: found wherever depthmine is installed
    overrides = [
        f"out_dir={out / 'train'}",
        f"max_steps={steps}",
        f"checkpoint_every={steps}",
        f"val_every={steps}",
        "progress=false",
        "tensorboard=false",
        "data.datasets=[{name: movies, kind: shards, path: '%s', split: train, shuffle_buffer: 16}]" % dataset,
        "data.val={name: movies-val, kind: shards, path: '%s', split: val}" % dataset,
    ]
    if clips:  # clips of consecutive frames, the per-frame loss plus temporal gradient matching
        overrides += [f"data.clip_frames={CLIP_TRAIN_FRAMES}", "data.batch_size=2", "loss.temporal=tgm"]
    result = train_model(config=config, overrides=overrides)
    loss = result.get("final_loss")
    loss_text = f"{loss:.4f}" if loss is not None else "n/a"
    print(f"      {result['steps']} steps, final loss {loss_text}; checkpoint {result['checkpoint']}")
    if result.get("val_error") is not None:
        print(f"      validation aligned disparity RMSE {result['val_error_start']:.4f} -> {result['val_error']:.4f}")
    _evaluate_against_untrained(out, dataset, result["checkpoint"], clips)
    return result["checkpoint"]


def _evaluate_against_untrained(out: Path, dataset: Path, checkpoint: str, clips: bool = False) -> None:
    """Zero-shot table on the held-out test movie: the trained model against its untrained init."""
    import torch

    from training.checkpoint import load_model
    from training.evaluation import compare, evaluate, write_report
    from training.model import build_model

    _, model_config = load_model(checkpoint)
    torch.manual_seed(0)
    model_log = logging.getLogger("training.model")
    level = model_log.level
    model_log.setLevel(logging.ERROR)  # random weights are the point of this baseline: no warning
    try:
        untrained = build_model(model_config)
    finally:
        model_log.setLevel(level)
    datasets = {"movies": str(dataset)}
    baseline = evaluate(untrained, datasets, device="cpu", label="untrained", progress=False)
    trained = evaluate(checkpoint, datasets, device="cpu", label="trained (demo)", progress=False)
    files = write_report([trained], out / "eval", baseline=baseline)
    print("      zero-shot evaluation on the held-out test movie (lower is better):")
    for line in compare([trained], baseline=baseline).to_text().splitlines():
        print(f"      {line}")
    print(f"      report: {files['table_md']}")
    if clips:
        aligned = evaluate(
            checkpoint, {"movies_temporal": str(dataset)}, device="cpu", progress=False, temporal_align=True
        )
        before = trained.value("movies_temporal")
        print(
            f"      temporal error of the test clips: {before:.4f}; each frame aligned to its predecessor "
            f"(depthmine predict --temporal): {aligned.value('movies_temporal'):.4f}"
        )
