"""Perplexity of a decoder on real English text, full attention against calibrated lazy plans.

`corpus` builds the text (the Python standard library's docstrings) and its
windows, `study` calibrates and measures, `plot` draws the result; the
command is `python cli.py perplexity`.
"""
