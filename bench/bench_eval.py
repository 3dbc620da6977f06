"""Inference and evaluation speed: ONNX Runtime vs PyTorch, batched vs per-image, metric cost.

Run: ``python bench/bench_eval.py [--encoder resnet18] [--features 256] [--size 384] [--images 4]``.
Random weights (the speed does not depend on them). Prints each measurement and the ratios
against the baseline measured in the same run:

1. PyTorch per-image (baseline) vs PyTorch batched vs ONNX Runtime batched, images/s at SIZE x SIZE;
   and the exported graph (padded to multiples of 32 inside) against the bare model's graph.
2. The aligned depth metrics (training.metrics.evaluate_depth, float64 numpy) on one ETH3D-sized
   image (6048 x 4032) vs the public MiDaS reference formulas in float32 torch (baseline), with the
   largest difference between the two AbsRel values.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.timing import best_of as _best


def _reference_abs_rel(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, cap: float) -> float:
    """The MiDaS evaluation formulas (compute_scale_and_shift + cap), float32 torch, one image."""
    target_disp = torch.zeros_like(target)
    target_disp[mask] = 1.0 / target[mask]
    m = mask.float()
    a00, a01, a11 = (m * prediction * prediction).sum(), (m * prediction).sum(), m.sum()
    b0, b1 = (m * prediction * target_disp).sum(), (m * target_disp).sum()
    det = a00 * a11 - a01 * a01
    s = (a11 * b0 - a01 * b1) / det
    t = (-a01 * b0 + a00 * b1) / det
    aligned = (s * prediction + t).clamp(min=1.0 / cap)
    depth = 1.0 / aligned
    return float((torch.abs(depth[mask] - target[mask]) / target[mask]).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--features", type=int, default=256)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--images", type=int, default=4)
    args = ap.parse_args()

    import logging

    logging.getLogger("training.model").setLevel(logging.ERROR)
    from training.export import check_onnx_parity, export_onnx
    from training.metrics import evaluate_depth
    from training.model import ModelConfig, build_model
    from training.predict import DepthPredictor

    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=args.encoder, features=args.features)).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.images)]
    pred = DepthPredictor(model, "cpu", side=args.size)
    pred.predict_batch(images[:1])  # warm-up
    print(
        f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, encoder {args.encoder}, "
        f"features {args.features}, {args.images} images {args.size}x{args.size}"
    )

    t_single = _best(lambda: [pred.predict_batch([im]) for im in images], 2)
    t_batch = _best(lambda: pred.predict(images, batch_size=len(images)), 2)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "m.onnx", args.size, args.size)
        parity = check_onnx_parity(model, path, shapes=[(2, 3, args.size, args.size)])
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        from training.transforms import normalize, to_tensor

        x = normalize(torch.stack([to_tensor(im) for im in images])).numpy()
        sess.run(None, {"image": x[:1]})
        t_ort = _best(lambda: sess.run(None, {"image": x}), 2)
        # the export pads to multiples of 32 inside the graph: its cost against the bare model's
        # graph (exported directly with torch.onnx) at a size that needs no padding
        bare = Path(tmp) / "bare.onnx"
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, args.size, args.size),),
            str(bare),
            dynamo=False,
            input_names=["image"],
            output_names=["disparity"],
            opset_version=17,
            dynamic_axes={"image": {0: "batch"}, "disparity": {0: "batch"}},
        )
        # one thread each, single images, alternating runs: the shared machine's load hits both alike
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        one = {
            "padded": ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]),
            "bare": ort.InferenceSession(str(bare), opts, providers=["CPUExecutionProvider"]),
        }
        times: dict[str, list[float]] = {k: [] for k in one}
        for _ in range(11):
            for k, sess_k in one.items():
                t = time.perf_counter()
                sess_k.run(None, {"image": x[:1]})
                times[k].append(time.perf_counter() - t)
        pad_median = float(np.median(times["padded"][1:]) / np.median(times["bare"][1:]))
        pad_best = min(times["padded"][1:]) / min(times["bare"][1:])
    n = len(images)
    print(f"pytorch per-image : {n / t_single:7.2f} img/s  (baseline)")
    print(f"pytorch batched   : {n / t_batch:7.2f} img/s  ratio {t_single / t_batch:.2f}x")
    print(f"onnxruntime batch : {n / t_ort:7.2f} img/s  ratio {t_single / t_ort:.2f}x  ({parity.summary()})")
    print(
        f"onnxruntime padded graph vs bare model graph (1 thread, 10 alternating runs): median time ratio "
        f"{pad_median:.3f}, best-of ratio {pad_best:.3f}"
    )

    h, w = 4032, 6048
    yy, xx = np.mgrid[0:h, 0:w]
    depth = (2.0 + 30.0 * xx / w + 5.0 * yy / h).astype(np.float32)
    mask = rng.random((h, w)) > 0.3
    prediction = (1.0 / depth + rng.normal(0, 0.002, (h, w))).astype(np.float32)
    t_ours = _best(lambda: evaluate_depth(prediction, depth, mask, 72.0), 2)
    p_t, d_t, m_t = torch.from_numpy(prediction), torch.from_numpy(depth), torch.from_numpy(mask)
    t_ref = _best(lambda: _reference_abs_rel(p_t, d_t, m_t, 72.0), 2)
    ours = evaluate_depth(prediction, depth, mask, 72.0)["abs_rel"]
    ref = _reference_abs_rel(p_t, d_t, m_t, 72.0)
    print(f"metrics 6048x4032 reference (torch f32): {t_ref:.2f} s  (baseline)")
    print(
        f"metrics 6048x4032 evaluate_depth (f64) : {t_ours:.2f} s  ratio {t_ref / t_ours:.2f}x; "
        f"AbsRel {ours:.6f} vs reference {ref:.6f} (|diff| {abs(ours - ref):.2e})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
