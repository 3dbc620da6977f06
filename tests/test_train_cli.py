"""One definition of the training options for `depthmine train` and `python -m training.train`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _options(parser) -> dict[str, tuple]:
    return {
        a.dest: (tuple(a.option_strings), a.metavar, a.help)
        for a in parser._actions
        if a.option_strings and a.dest not in ("help", "nproc")
    }


def test_both_entry_points_parse_the_same_training_options():
    from flows.cli import build_parser
    from training.train import build_parser as torchrun_parser

    cli = build_parser()._subparsers._group_actions[0].choices["train"]
    assert _options(cli) == _options(torchrun_parser())
    assert set(_options(cli)) == {"config", "overrides", "resume", "out"}


def test_building_the_cli_parser_does_not_import_torch():
    code = "import sys, flows.cli; flows.cli.build_parser(); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr[-2000:]
