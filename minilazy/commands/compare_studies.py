"""`python cli.py compare-studies`: several `study` runs on the same questions in one table and one plot."""

from __future__ import annotations

import argparse
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python cli.py compare-studies",
                                description="Put the study.json files of several `python cli.py study` runs on the "
                                "same questions (e.g. --lazy-method js, rank and greedy) into one table and one plot "
                                "of accuracy (and the study's other metrics) against KV cache saved: the lazy runs of "
                                "each study as a curve labelled by how its plans were chosen, FastV, VTW and full "
                                "attention once. Writes compare.md and compare.png under --out.")
    p.add_argument("studies", nargs="+", metavar="STUDY.json", help="study.json files written by `cli.py study`")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for compare.md and compare.png")
    return p


def run(args) -> int:
    from minilazy.study.compare import comparison_table, load_study, plot_comparison

    studies = [load_study(path) for path in args.studies]
    table = comparison_table(studies)  # refuses studies that do not compare before anything is written
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = "\n".join(f"- `{path}`: `{study.get('command', '')}`" for path, study in zip(args.studies, studies))
    (out / "compare.md").write_text(f"# KV cache saved vs accuracy, a curve per method\n\nOn {studies[0]['subject']}; "
                                    f"from\n\n{sources}\n\n{table}\n")
    plot_comparison(studies, out / "compare.png")
    print(table)
    print(f"written: {out / 'compare.md'}, {out / 'compare.png'}")
    return 0
