"""The headline experiment: KV cache saved versus accuracy, for Lazy Attention, FastV and both.

`sweep.py` calibrates once and evaluates every setting on the same questions, those of a question
set (`question_sets.py`: the demo's held-out questions, or a VQA data set read by `vqa_data.py` and
scored by `normalize.py`); `report.py` turns the result into a markdown table and a plot.
"""

from minilazy.study.question_sets import CALIBRATION_PROMPT, DataQuestions, DemoQuestions, calibration_samples
from minilazy.study.report import markdown_table, plot_study, write_report
from minilazy.study.sweep import RunSpec, default_runs, run_study, runtime_for

__all__ = ["CALIBRATION_PROMPT", "DataQuestions", "DemoQuestions", "RunSpec", "calibration_samples", "default_runs",
           "markdown_table", "plot_study", "run_study", "runtime_for", "write_report"]
