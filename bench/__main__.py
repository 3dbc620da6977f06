"""Run every benchmark module under bench/ in turn: ``python -m bench [NAME ...]``.

Each runs as ``python -m bench.bench_<name>`` from the repository root, as a package: no edits of the import path.

Each benchmark measures its own baseline in the same run and prints the ratio; results worth
keeping go to bench/RESULTS.md with the machine and the command.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    scripts = sorted(here.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if any(a in s.stem for a in argv)]
    failed = 0
    for script in scripts:
        print(f"== {script.stem}", flush=True)
        failed += subprocess.call([sys.executable, "-m", f"bench.{script.stem}"], cwd=here.parent) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
