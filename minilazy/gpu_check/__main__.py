"""`python -m minilazy.gpu_check OUT_DIR [--dry-run]`: see minilazy/gpu_check/__init__.py and docs/gpu.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minilazy.gpu_check.runner import PARTS, run_check


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m minilazy.gpu_check", description="The Triton kernels, the runtime, "
                                "the serving engine and the bench on a CUDA GPU, in one run.")
    p.add_argument("out_dir", help="where check.json and each part's JSON and log go")
    p.add_argument("--dry-run", action="store_true",
                   help="the same script on tiny shapes on the CPU (the reference backend standing in for triton)")
    p.add_argument("--parts", nargs="+", choices=[part.name for part in PARTS], metavar="PART",
                   help=f"run only these parts (default: all of {', '.join(part.name for part in PARTS)})")
    args = p.parse_args(argv)
    parts = [part for part in PARTS if args.parts is None or part.name in args.parts]
    report = run_check(Path(args.out_dir), args.dry_run, parts)
    return 0 if all(r["status"] == "passed" for r in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
