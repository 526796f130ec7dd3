"""A corpus of real English text that exists offline: the Python standard library's own docstrings.

The docstrings of a fixed, sorted list of modules (the module itself, its
public functions and classes, and the public methods of those classes) are
collected with `inspect.getdoc`, kept when they read like prose, deduplicated
and joined into one text. The model's tokenizer turns it into one token
stream, cut into non-overlapping windows of fixed length; a seeded
permutation of the windows gives a disjoint evaluation split (its first
windows) and calibration split (its last windows), so changing one split's
size never moves the other. The text depends only on the Python version.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from dataclasses import dataclass

import torch

from minilazy.errors import InputError

MODULES = tuple(sorted((
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "cmd", "codecs", "collections",
    "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "email.message", "enum", "filecmp", "fileinput", "fnmatch", "fractions", "ftplib", "functools",
    "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html.parser", "http.client", "http.cookies",
    "imaplib", "inspect", "io", "ipaddress", "json", "locale", "logging", "logging.handlers", "mailbox",
    "mimetypes", "multiprocessing.pool", "numbers", "operator", "optparse", "os", "pathlib", "pickle", "pkgutil",
    "platform", "poplib", "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shelve", "shlex",
    "shutil", "smtplib", "socket", "socketserver", "statistics", "string", "subprocess", "tarfile", "tempfile",
    "textwrap", "threading", "timeit", "tokenize", "traceback", "typing", "unittest.case", "urllib.parse",
    "urllib.request", "uuid", "warnings", "weakref", "xml.dom.minidom", "zipfile",
)))
MIN_CHARS = 80  # shorter docstrings are mostly one-line signatures
MIN_LETTER_SHARE = 0.75  # letters and spaces among characters: prose rather than code or tables
SPLIT_SEED = 0


def _public(names) -> list[str]:
    return sorted(n for n in names if not n.startswith("_"))


def _documented_objects(module):
    """The module, then its own public functions and classes (with their public methods), in name order."""
    yield module
    for name in _public(vars(module)):
        obj = vars(module)[name]
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or getattr(obj, "__module__", None) != module.__name__:
            continue
        yield obj
        if inspect.isclass(obj):
            for method in _public(vars(obj)):
                member = vars(obj)[method]
                if inspect.isfunction(member):
                    yield member


def is_prose(text: str) -> bool:
    letters = sum(c.isalpha() or c.isspace() for c in text)
    return len(text) >= MIN_CHARS and letters >= MIN_LETTER_SHARE * len(text)


def docstrings(modules=MODULES) -> list[str]:
    """The prose docstrings of `modules`, in a fixed order, each kept once."""
    seen, texts = set(), []
    for name in modules:
        module = importlib.import_module(name)
        for obj in _documented_objects(module):
            with warnings.catch_warnings():  # reading a deprecated alias's docstring (typing.io) warns
                warnings.simplefilter("ignore", DeprecationWarning)
                text = inspect.getdoc(obj)
            if text and is_prose(text) and text not in seen:
                seen.add(text)
                texts.append(text)
    return texts


@dataclass
class Corpus:
    text: str
    documents: int
    tokens: torch.Tensor  # [N] the whole token stream
    window: int

    @property
    def num_windows(self) -> int:
        return self.tokens.numel() // self.window

    def windows(self) -> torch.Tensor:
        """Every window `[W, window]`, in text order."""
        n = self.num_windows
        return self.tokens[: n * self.window].view(n, self.window)  # [W, window]

    def splits(self, evaluate: int, calibrate: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Disjoint `(evaluation [E, window], calibration [C, window])` windows, chosen by a seeded permutation."""
        if evaluate < 1 or calibrate < 1:
            raise InputError(f"need at least one evaluation and one calibration window, got {evaluate} and {calibrate}")
        if evaluate + calibrate > self.num_windows:
            raise InputError(f"the corpus has {self.num_windows} windows of {self.window} tokens; "
                             f"{evaluate} evaluation + {calibrate} calibration windows do not fit")
        order = torch.randperm(self.num_windows, generator=torch.Generator().manual_seed(SPLIT_SEED))
        windows = self.windows()
        return windows[order[:evaluate]], windows[order[-calibrate:]]

    def describe(self) -> dict:
        return {"source": "inspect.getdoc of the Python standard library", "python": sys.version.split()[0],
                "modules": len(MODULES), "documents": self.documents, "characters": len(self.text),
                "tokens": self.tokens.numel(), "window": self.window, "windows": self.num_windows}


def build_corpus(tokenizer, window: int) -> Corpus:
    """The docstring corpus tokenized by `tokenizer` (a `tokenizers.Tokenizer`), in windows of `window` tokens."""
    if window < 2:
        raise InputError(f"a window needs at least 2 tokens, got {window}")
    texts = docstrings()
    text = "\n\n".join(texts)
    tokens = torch.tensor(tokenizer.encode(text, add_special_tokens=False).ids, dtype=torch.long)  # [N]
    return Corpus(text, len(texts), tokens, window)
