"""The headline experiment: KV cache saved versus accuracy, for Lazy Attention, FastV and both.

`sweep.py` calibrates once and evaluates every setting on the same held-out questions;
`report.py` turns the result into a markdown table and a plot.
"""

from minilazy.study.report import markdown_table, plot_study, write_report
from minilazy.study.sweep import (CALIBRATION_PROMPT, RunSpec, calibration_samples, default_runs, run_study,
                                  runtime_for)

__all__ = ["CALIBRATION_PROMPT", "RunSpec", "calibration_samples", "default_runs", "markdown_table", "plot_study",
           "run_study", "runtime_for", "write_report"]
