"""One part of the check in its own process: `python -m minilazy.gpu_check.part MODULE:FUNCTION OUT_DIR`.

The function takes `(out_dir, Setting)`, writes its JSON and returns `(ok, summary lines)`; the lines go
to stdout, progress to stderr. Exit status 0: every check passed; 1: the part ran and a check failed;
2: the part itself failed (its traceback is on stderr). A dry run's part runs torch on one thread: its
tiny shapes gain nothing from more, and threads that wait on each other on a busy CPU slow it many times.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path

import torch

from minilazy.gpu_check.setting import Setting


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m minilazy.gpu_check.part", description=__doc__.split("\n\n")[0])
    p.add_argument("target", help="MODULE:FUNCTION of the part")
    p.add_argument("out_dir")
    p.add_argument("--budget", type=float, required=True, help="the part's time limit in seconds")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    module, _, function = args.target.partition(":")
    if args.dry_run:
        torch.set_num_threads(1)
    try:
        run = getattr(importlib.import_module(module), function)
        ok, lines = run(Path(args.out_dir), Setting(args.dry_run, args.budget))
    except Exception:  # noqa: BLE001 - whatever went wrong is the part's report
        traceback.print_exc()
        return 2
    print("\n".join(lines), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
