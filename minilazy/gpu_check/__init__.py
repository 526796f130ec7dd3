"""The GPU check: one command that runs the Triton kernels, the runtime, the serving engine and the bench
on a CUDA GPU.

    PYTHONPATH=. python -m minilazy.gpu_check OUT_DIR [--dry-run]

Four parts, each in its own process under its own time limit (runner.py), each writing
`OUT_DIR/<part>.json` and a few summary lines:

- kernels.py: the kernel tests of tests/kernels/ with `--device cuda`, natively, plus the GPU-sized cases;
- runtime.py: whole models on the triton backend on the GPU against the reference backend on the CPU;
- serve.py: the serving engine's tokens against `generate()` alone, and its throughput on one KV budget;
- bench.py: speed and memory at SmolVLM-256M's shapes, triton against the torch paths and transformers.

`--dry-run` runs the same code on tiny shapes on this machine's CPU (setting.py says what stands in for
what), so that the test suite checks the script before a GPU ever sees it. docs/gpu.md says how to read it.
"""
