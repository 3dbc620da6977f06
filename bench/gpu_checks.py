"""The checks only a GPU can make, as one prepared script for a session lent a device.

    python bench/gpu_checks.py [--out DIR]

1. The ptlflow CUDA path: ``ptlflow:raft_small`` (random weights: timing and numerics only; no
   checkpoint is downloaded) on the same pairs on the CPU and on CUDA, fp32 and autocast
   (bf16/fp16): the flow-to-disparity agreement between them, and seconds per 1880x800 pair,
   batched, for both directions.
2. A real AMP training step: ``bench/bench_loader.py --gpu`` (bf16 steps/s of ResNet-50 and
   ResNeXt-101 at 384x384).
3. The label benchmark with a ptlflow network (``--pairs DIR --ckpt FILE``, or
   ``DEPTHMINE_STEREO_GT`` and ``DEPTHMINE_PTLFLOW_CKPT``): ``bench/bench_labels.py`` over the real
   pairs with ground truth, the network alone and as the flow of the default consensus (both through
   the same checks as the CPU labeller), beside the CPU default. Skipped with a note when no pair
   folder or no checkpoint is given: a random-weight network says nothing about labels.

Prints a JSON summary (and writes it to ``--out/gpu_checks.json``). Sized for a few minutes on an
H100; exits 2 with a message where no CUDA device is present.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _pairs(n: int, width: int, height: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from pipeline.synthetic import render_stereo_frame

    frames = [render_stereo_frame(width, height, 0.5 + i, seed=i, letterbox=False) for i in range(n)]
    return [(f.left, f.right) for f in frames]


def _time_backend(backend, pairs, repeat: int = 3) -> tuple[float, list]:
    import torch

    out = backend.compute([p[0] for p in pairs], [p[1] for p in pairs])  # warm-up (cudnn autotune, allocation)
    best = float("inf")
    for _ in range(repeat):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = backend.compute([p[0] for p in pairs], [p[1] for p in pairs])
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best / len(pairs), out


def ptlflow_checks(model_name: str) -> dict:
    from pipeline.flow import flow_to_disparity, get_backend

    summary: dict = {"model": model_name}
    small = _pairs(2, 480, 256)
    cpu = get_backend(f"ptlflow:{model_name}", allow_random_weights=True, device="cpu", amp=False)
    ref = cpu.compute([p[0] for p in small], [p[1] for p in small])
    model = cpu._model().to("cuda")  # the same random weights on the GPU
    big = _pairs(4, 1880, 800)
    for amp in (False, True):
        tag = "amp" if amp else "fp32"
        gpu = get_backend(f"ptlflow:{model_name}", device="cuda", amp=amp, model=model)
        res = gpu.compute([p[0] for p in small], [p[1] for p in small])
        diff = np.concatenate([(flow_to_disparity(a.lr) - flow_to_disparity(b.lr)).ravel() for a, b in zip(ref, res)])
        finite = np.isfinite(diff)
        summary[f"finite_fraction_{tag}"] = float(finite.mean())
        summary[f"max_disparity_diff_cpu_vs_cuda_{tag}_px"] = (
            float(np.abs(diff[finite]).max()) if finite.any() else None
        )
        summary[f"seconds_per_1880x800_pair_both_directions_{tag}"] = _time_backend(gpu, big)[0]
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"), help="folder for gpu_checks.json")
    ap.add_argument("--model", default="raft_small", help="ptlflow model to time (default raft_small)")
    ap.add_argument("--skip-training", action="store_true", help="only the ptlflow checks")
    ap.add_argument(
        "--pairs", default=os.environ.get("DEPTHMINE_STEREO_GT"), help="folder of real pairs with ground truth"
    )
    ap.add_argument(
        "--ckpt",
        default=os.environ.get("DEPTHMINE_PTLFLOW_CKPT"),
        help="local checkpoint of --label-model for the label benchmark",
    )
    ap.add_argument("--label-model", default="raft", help="ptlflow model of the label benchmark (default raft)")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_checks: no CUDA device here; run this on a machine with a GPU", file=sys.stderr)
        return 2
    summary = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    summary["ptlflow"] = ptlflow_checks(args.model)
    if not args.skip_training:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.bench_loader", "--gpu"], capture_output=True, text=True, cwd=ROOT
        )
        summary["training_bf16"] = {"returncode": proc.returncode, "output": proc.stdout[-3000:] + proc.stderr[-2000:]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.pairs and args.ckpt:
        cmd = [
            sys.executable,
            "-m",
            "bench.bench_labels",
            "--pairs",
            args.pairs,
            "--flow",
            f"ptlflow:{args.label_model}",
            "--ckpt",
            args.ckpt,
            "--device",
            "cuda",
            "--only",
            "balanced",
            "--only",
            f"balanced, ptlflow:{args.label_model}",
            "--only",
            f"ptlflow:{args.label_model} alone",
            "--json",
            str(out / "labels_gpu.json"),
            "--pictures",
            str(out / "labels_gpu"),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        summary["labels"] = {"returncode": proc.returncode, "output": proc.stdout[-6000:] + proc.stderr[-2000:]}
    else:
        summary["labels"] = (
            "skipped: give --pairs DIR and --ckpt FILE (a trained ptlflow checkpoint) for the label benchmark"
        )
    (out / "gpu_checks.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
