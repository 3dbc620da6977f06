"""``depthmine eval``: zero-shot evaluation of checkpoints on public benchmarks and the movie test split."""

from __future__ import annotations

import argparse

__all__ = ["register"]

EPILOG = """\
benchmarks (NAME in --dataset NAME:PATH; layouts in training/benchmarks/<name>.py):
  diw     DIW_test.csv (+ images)                    WHDR %%
  eth3d   <scene>/images/dslr_images + ground_truth_depth/dslr_images (raw float32)   AbsRel, cap 72 m
  sintel  final/<scene>/*.png + depth/<scene>/*.dpt  AbsRel, cap 72 m
  kitti   files.txt of "<image> <depth png>" (uint16/256, 0 = invalid)   delta>1.25 %%, cap 80 m
  nyu     nyu_depth_v2_labeled.mat + splits.mat (official 654 test images)   delta>1.25 %%, cap 10 m
  tum     <sequence>/ with associations.txt or rgb.txt + depth.txt (PNG/5000)   delta>1.25 %%, cap 10 m
  movies  a depthmine shard dataset (test split)     aligned disparity RMSE on the [0, 1] scale
                                                     (each frame's label range mapped to [0, 1], as in training)

row names: runs/a/checkpoints/final.pt is "a/final", other files their stem; --label NAME
(once per model, baseline first) names them yourself. Two rows never share a name.

examples:
  depthmine eval --checkpoint runs/a/last.pt --dataset movies:dataset/ --dataset nyu:/data/nyu
  depthmine eval --baseline midas_v21.pt --checkpoint ours.pt --dataset kitti:/data/kitti/files.txt --out eval/
  depthmine eval --baseline runs/a/checkpoints/final.pt --checkpoint runs/b/checkpoints/final.pt \
      --label before --label after --dataset movies:dataset/
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="zero-shot evaluation table (DIW, ETH3D, Sintel, KITTI, NYU, TUM, movies)",
        description=(
            "Evaluate checkpoints zero-shot with the protocol of the MiDaS paper: each prediction is "
            "aligned to the ground truth by least-squares scale and shift in disparity space, converted "
            "to depth and capped, then scored (WHDR, AbsRel, delta>1.25 error rate; aligned disparity "
            "RMSE on the movie test split). Prints the paper's table, one row per checkpoint; with "
            "--baseline, each cell shows the relative improvement over it. With --out, writes "
            "table.csv, table.md, per_image.csv, report.json and per_image_errors.png."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint", action="append", default=[], metavar="CKPT", help="checkpoint to evaluate (repeatable)"
    )
    p.add_argument(
        "--baseline", default=None, metavar="CKPT", help="checkpoint the others are compared with (listed first)"
    )
    p.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME:PATH",
        required=True,
        help="benchmark and its local path (repeatable)",
    )
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME",
        help="row name, once per model in table order (the baseline first); default: the run folder "
        "and file stem (runs/a/checkpoints/final.pt -> a/final)",
    )
    p.add_argument("--out", default=None, metavar="DIR", help="folder for CSV, markdown, JSON and the per-image plot")
    p.add_argument(
        "--max-images",
        type=int,
        default=None,
        metavar="N",
        help="score at most N images per benchmark (a quick look, not the protocol)",
    )
    p.add_argument("--batch-size", type=int, default=4, help="images of one size per forward pass (default 4)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--no-plot", action="store_true", help="skip the per-image error plot")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.errors import ConfigError
    from training.evaluation import compare, evaluate, parse_dataset_spec, write_report

    if not args.checkpoint and not args.baseline:
        raise ConfigError("give at least one --checkpoint CKPT")
    datasets = [parse_dataset_spec(d) for d in args.dataset]  # fail on a bad NAME before loading models
    checkpoints = ([args.baseline] if args.baseline else []) + args.checkpoint
    labels = row_labels(checkpoints, args.label)
    reports = []
    for ckpt, label in zip(checkpoints, labels):
        reports.append(
            evaluate(
                ckpt, datasets, device=args.device, max_images=args.max_images, label=label, batch_size=args.batch_size
            )
        )
    baseline = reports[0] if args.baseline else None
    table = compare(reports, baseline)
    print(table.to_text())
    if args.out:
        paths = write_report(reports, args.out, baseline, plot=not args.no_plot)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def row_labels(paths: list[str], given: list[str]) -> list[str]:
    """Row names: ``--label`` values when given (one per model, distinct), else
    :func:`training.evaluation.run_label` of each path, made distinct where they collide."""
    from pathlib import Path

    from pipeline.errors import ConfigError
    from training.evaluation import run_label, unique_labels

    if given:
        if len(given) != len(paths):
            raise ConfigError(
                f"{len(given)} --label for {len(paths)} models: give one per model, in table order (the baseline first)"
            )
        if len(set(given)) != len(given):
            raise ConfigError(f"--label values must differ (got {', '.join(given)})")
        return list(given)
    labels = [run_label(p) for p in paths]
    # colliding names (runs/a/final.pt, runs/b/final.pt) take their folder, then a number
    labels = [
        f"{Path(p).parent.name}/{lb}" if labels.count(lb) > 1 and lb == Path(p).stem and Path(p).parent.name else lb
        for p, lb in zip(paths, labels)
    ]
    return unique_labels(labels)
