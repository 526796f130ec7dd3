"""Experiments that answered one question each about the demo model or the CPU path; see README.md here.

Not part of the minilazy package: run them from the repository root, e.g.
`python -m experiments.relation_probe --model weights/demo`.
"""
