"""Every kernel module is complete: a test file, compile cases for each kernel, and both backends of each op."""

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import minilazy.kernels
from minilazy.kernels.aot import CompileCase
from minilazy.kernels.backend import OP_MODULES

KERNELS_DIR = Path(minilazy.kernels.__file__).parent
TESTS_DIR = Path(__file__).parent
# Infrastructure modules of minilazy/kernels/ that hold no launched kernels (online_softmax: device helpers).
NOT_KERNEL_MODULES = {"backend", "aot", "blocks", "online_softmax"}


def kernel_modules() -> list[str]:
    """Names of the minilazy/kernels/ modules that define a @triton.jit function (found without importing them)."""
    names = (info.name for info in pkgutil.iter_modules([str(KERNELS_DIR)]) if not info.ispkg)  # not minilazy/kernels/cpu
    return sorted(
        name for name in names
        if name not in NOT_KERNEL_MODULES and "@triton.jit" in (KERNELS_DIR / f"{name}.py").read_text()
    )


def _unwrap(obj):
    """The jit function under autotune/heuristics wrappers (each keeps it as `.fn`)."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    while not isinstance(obj, (JITFunction, InterpretedFunction)) and hasattr(obj, "fn"):
        obj = obj.fn
    return obj if isinstance(obj, (JITFunction, InterpretedFunction)) else None


def launched_kernels(module) -> dict:
    """name -> jit function for the module's own jit functions that no other of them calls (its kernels)."""
    own = {}
    for name, obj in vars(module).items():
        fn = _unwrap(obj)
        if fn is not None and fn.fn.__module__ == module.__name__:
            own[name] = fn
    sources = {name: inspect.getsource(fn.fn) for name, fn in own.items()}
    return {
        name: fn for name, fn in own.items()
        if not any(re.search(rf"\b{name}\s*\(", src) for other, src in sources.items() if other != name)
    }


def test_kernel_modules_are_found():
    assert "linear" in kernel_modules()


@pytest.mark.parametrize("module_name", kernel_modules())
def test_kernel_module_has_tests(module_name):
    test_file = TESTS_DIR / f"test_{module_name}.py"
    assert test_file.exists(), f"minilazy/kernels/{module_name}.py has no tests/kernels/{test_file.name}"


@pytest.mark.parametrize("module_name", kernel_modules())
def test_every_kernel_has_compile_cases(module_name):
    module = importlib.import_module(f"minilazy.kernels.{module_name}")
    cases = getattr(module, "COMPILE_CASES", None)
    assert cases, f"minilazy/kernels/{module_name}.py defines no (or an empty) COMPILE_CASES"
    assert all(isinstance(case, CompileCase) for case in cases), f"{module_name}: COMPILE_CASES must hold CompileCase"
    compiled = {id(_unwrap(case.kernel)) for case in cases}
    missing = [name for name, fn in launched_kernels(module).items() if id(fn) not in compiled]
    assert not missing, f"minilazy/kernels/{module_name}.py: kernels without a compile case: {missing}"


@pytest.mark.parametrize("op,module_name", sorted(OP_MODULES.items()))
def test_op_has_kernel_and_reference(op, module_name):
    assert (KERNELS_DIR / f"{module_name}.py").exists(), f"op {op}: minilazy/kernels/{module_name}.py is missing"
    module = importlib.import_module(f"minilazy.kernels.{module_name}")
    for name in (op, f"{op}_ref"):
        assert callable(getattr(module, name, None)), f"minilazy/kernels/{module_name}.py lacks {name}()"
