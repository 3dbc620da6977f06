"""Label quality on real stereo pairs with ground truth, for every backend and preset.

Run: ``python -m bench.bench_labels --pairs DIR`` (or set ``DEPTHMINE_STEREO_GT=DIR``).
A pair folder holds ``NAME_left.png``, ``NAME_right.png`` and ``NAME_disp.npz`` (``disparity``, NaN
where unknown); see :mod:`pipeline.labelbench`.

Prints, for each operating point (a preset, or a flow backend alone):

* the pooled table: share of ground-truth pixels kept as labels (a rejected frame keeps none),
  bad-1/2/4 among kept, end-point error, rejected frames, the worst pair's bad-2, ms per Mpx for
  everything the labeller does (flow both ways, matcher, checks, sky) in wall time and in processor
  time (all threads; robust to other load on the machine), and the ratios of bad-2 and wall time
  against the baseline measured in the same run (``flow-only``: dis-medium alone, the method before
  the consensus);
* the sparsification table: bad-2 among the 25/50/75% most certain kept pixels (by
  ``uncertainty``) and the 50% figure as a share of bad-2 among all kept;
* per pair, for the default (and for ``--detail NAME`` rows): kept, bad-2, EPE, rejection, time;

and writes one picture per pair of the default (image, label, error map, valid mask) to
``--pictures`` (default ``bench/out/labels``). ``--json FILE`` saves every number.

Options: ``--only NAME`` (repeatable) picks rows; ``--flow ptlflow:raft --ckpt FILE --device cuda``
adds a row for that backend in the default preset (a GPU network through the same checks).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from pipeline.disparity import LABEL_PRESETS, DisparityConfig, preset_config
from pipeline.errors import DepthmineError
from pipeline.labelbench import SPARSIFICATION_LEVELS, error_picture, label_pairs, load_pairs, pool_scores
from pipeline.viz import save_png

BASELINE = "flow-only"


def operating_points(extra_flows: list[str], ckpt: str | None, device: str | None) -> dict[str, DisparityConfig]:
    """Name -> configuration of every row: the presets, then each flow backend alone."""
    rows = {name: preset_config(name) for name in LABEL_PRESETS}
    rows["balanced, dis-fast flow"] = preset_config("balanced", flow="dis-fast")
    for flow in ("dis-fast", "dis-ultrafast", "deepflow", "sgbm"):
        rows[f"{flow} alone"] = preset_config("flow-only", flow=flow)
    for flow in extra_flows:
        rows[f"balanced, {flow}"] = preset_config("balanced", flow=flow, ckpt=ckpt, device=device)
        rows[f"{flow} alone"] = preset_config("flow-only", flow=flow, ckpt=ckpt, device=device)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--pairs",
        default=os.environ.get("DEPTHMINE_STEREO_GT"),
        help="folder of NAME_left.png/NAME_right.png/NAME_disp.npz pairs (default: $DEPTHMINE_STEREO_GT)",
    )
    ap.add_argument("--only", action="append", default=[], help="run only this row (repeatable)")
    ap.add_argument("--detail", action="append", default=[], help="also print the per-pair table of this row")
    ap.add_argument("--flow", action="append", default=[], help="add rows for this backend, e.g. ptlflow:raft")
    ap.add_argument("--ckpt", help="checkpoint file for --flow ptlflow:<model>")
    ap.add_argument("--device", help="torch device for --flow networks (default: CUDA when present)")
    ap.add_argument("--sky", default="heuristic", help="sky masker for every row (default: heuristic, as ingest)")
    ap.add_argument("--pictures", default="bench/out/labels", help="folder for the per-pair pictures ('' for none)")
    ap.add_argument("--json", help="write every number to this JSON file")
    args = ap.parse_args(argv)
    if not args.pairs:
        # nothing to measure (``python -m bench`` runs every benchmark): say so, do not fail the run
        print("bench_labels: skipped: no pairs with ground truth (give --pairs DIR or set DEPTHMINE_STEREO_GT)")
        return 0
    try:
        pairs = load_pairs(args.pairs)
        rows = operating_points(args.flow, args.ckpt, args.device)
    except DepthmineError as exc:
        print(f"bench_labels: {exc}", file=sys.stderr)
        return 2
    if args.only:
        unknown = [o for o in args.only if o not in rows]
        if unknown:
            print(f"bench_labels: unknown row(s) {unknown}; rows: {list(rows)}", file=sys.stderr)
            return 2
        rows = {k: v for k, v in rows.items() if k in args.only or k == BASELINE}
    default_row = next(iter(rows))
    print(
        f"{len(pairs)} pairs from {args.pairs}: {', '.join(p.name for p in pairs)}; "
        f"{sum(p.megapixels for p in pairs):.2f} Mpx; sky={args.sky}\n"
    )

    results: dict[str, dict] = {}
    scored: dict[str, list] = {}
    for name, cfg in rows.items():
        cfg = dataclasses.replace(cfg, sky=args.sky)
        try:
            scored[name] = label_pairs(pairs, cfg)
        except DepthmineError as exc:
            print(f"{name}: skipped ({exc})")
            continue
    base = pool_scores([s for s, _ in scored[BASELINE]]) if BASELINE in scored else None

    print(
        "| operating point | kept | bad-1 | bad-2 | bad-4 | EPE px | rejected | worst bad-2 | ms/Mpx | CPU ms/Mpx | bad-2 / base | time / base |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, items in scored.items():
        p = pool_scores([s for s, _ in items])
        r_bad = p.bad_share(2) / base.bad_share(2) if base and base.bad_share(2) else float("nan")
        r_time = p.ms_per_mpx / base.ms_per_mpx if base else float("nan")
        print(
            f"| {name} | {p.kept_share:.1%} | {p.bad_share(1):.2%} | {p.bad_share(2):.2%} | {p.bad_share(4):.2%} | "
            f"{p.epe:.3f} | {p.rejected}/{p.pairs} | {p.worst_bad2:.1%} ({p.worst_pair}) | {p.ms_per_mpx:.0f} | {p.cpu_ms_per_mpx:.0f} | "
            f"{r_bad:.2f} | {r_time:.2f} |"
        )
        results[name] = {"pooled": asdict(p), "pairs": [asdict(s) for s, _ in items]}

    levels = " | ".join(f"bad-2 @ {lv:.0%}" for lv in SPARSIFICATION_LEVELS)
    print(
        f"\nSparsification (kept pixels ranked by uncertainty, most certain first)\n\n| operating point | {levels} | bad-2 @ all | 50% / all |"
    )
    print("|---|" + "---|" * (len(SPARSIFICATION_LEVELS) + 2))
    for name, items in scored.items():
        p = pool_scores([s for s, _ in items])
        cells = " | ".join(f"{p.sparse_bad2_share(i):.2%}" for i in range(len(SPARSIFICATION_LEVELS)))
        half = SPARSIFICATION_LEVELS.index(0.5)
        ratio = p.sparse_bad2_share(half) / p.bad_share(2) if p.bad_share(2) else float("nan")
        print(f"| {name} | {cells} | {p.bad_share(2):.2%} | {ratio:.2f} |")

    for name in [default_row, *[d for d in args.detail if d in scored and d != default_row]]:
        print(f"\nPer pair: {name}\n\n| pair | kept | bad-2 | EPE px | rejected | ms/Mpx |\n|---|---|---|---|---|---|")
        for s, _ in scored[name]:
            print(
                f"| {s.name} | {s.kept_share:.1%} | {s.bad_share(2):.2%} | {s.epe:.3f} | {s.rejected_reason or '-'} | {s.ms_per_mpx:.0f} |"
            )

    if args.pictures and default_row in scored:
        out = Path(args.pictures)
        for pair, (s, result) in zip(pairs, scored[default_row]):
            save_png(out / f"{pair.name}.png", error_picture(pair, result, s))
        print(f"\npictures of '{default_row}': {out}/NAME.png")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
