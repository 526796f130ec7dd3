"""The subcommands of cli.py: each module has `parser()` and `run(args)`."""

import importlib


class _Lazy:
    """Import a command's module only when it runs (some need matplotlib or transformers)."""

    def __init__(self, module: str):
        self.module = module

    def parser(self):
        return importlib.import_module(self.module).parser()

    def run(self, args):
        return importlib.import_module(self.module).run(args)


DEFAULT_COMMAND = "generate"
COMMANDS = {
    "generate": _Lazy("minilazy.commands.generate"),
    "calibrate": _Lazy("minilazy.commands.calibrate"),
    "bench": _Lazy("minilazy.commands.bench"),
    "perplexity": _Lazy("minilazy.commands.perplexity"),
    "eval": _Lazy("minilazy.commands.evaluate"),
    "study": _Lazy("minilazy.commands.study"),
    "compare-studies": _Lazy("minilazy.commands.compare_studies"),
    "serve": _Lazy("minilazy.commands.serve"),
    "loadtest": _Lazy("minilazy.commands.loadtest"),
}
