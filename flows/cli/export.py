"""``depthmine export``: a checkpoint to ONNX, checked against PyTorch with ONNX Runtime."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (with a parity check)",
        description=(
            "Export the model of a checkpoint to ONNX: input 'image' (Bx3xHxW float32, RGB in [0, 1] "
            "normalised with the ImageNet mean/std), output 'disparity' (BxHxW). Then run the file "
            "with ONNX Runtime and PyTorch on the same random inputs and print the largest "
            "difference; exits 1 when it exceeds --tolerance (relative to the output range)."
        ),
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="depthmine (or MiDaS v2.1) checkpoint")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="ONNX file to write (model.onnx)")
    p.add_argument(
        "--height",
        type=int,
        default=384,
        help="export height (default 384; any size, padded inside the graph to a multiple of 32 and cropped back)",
    )
    p.add_argument("--width", type=int, default=384, help="export width (default 384)")
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="symbolic batch, height and width (any sizes: "
        "the parity check also runs a non-square size that is not a multiple of 32)",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="allowed max difference / output range (default 1e-3)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime parity check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.errors import ConfigError
    from training.checkpoint import load_model
    from training.export import check_onnx_parity, export_onnx

    if args.height < 32 or args.width < 32:
        raise ConfigError("--height and --width must be at least 32")
    model, cfg = load_model(args.checkpoint, map_location="cpu")
    path = export_onnx(model, args.out, args.height, args.width, dynamic=args.dynamic, opset=args.opset)
    print(
        f"wrote {path} (encoder {cfg.encoder}, {'dynamic' if args.dynamic else f'{args.width}x{args.height}'}, opset {args.opset})"
    )
    if args.no_check:
        return 0
    shapes = [(2, 3, args.height, args.width)]
    if args.dynamic:
        # another size, non-square and not a multiple of 32 (the padding path of the graph)
        h2 = max(33, args.height // 2 // 32 * 32 + 19)
        w2 = max(h2 + 21, (args.width * 3 // 4) // 32 * 32 + 9)
        shapes.append((1, 3, h2, w2))
    result = check_onnx_parity(model, path, shapes=shapes, tolerance=args.tolerance)
    print(result.summary())
    return 0 if result.ok else 1
