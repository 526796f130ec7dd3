"""The main suite's setup (Triton in the interpreter without a GPU, seeded RNG) for the experiments' tests:

    python -m pytest experiments/tests -q
"""

from tests.conftest import _seed  # noqa: F401  (importing it also sets the Triton environment)
