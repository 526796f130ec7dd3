"""minilazy's command line.

    python cli.py --image IMG --prompt TEXT [--model DIR] ...   answer a question (the default command)
    python cli.py calibrate --model DIR --images DIR_OR_N ...   choose lazy layers, write a plan
    python cli.py eval --model DIR --n N ...                    accuracy of the demo model
    python cli.py study --model DIR ...                         KV saved vs accuracy, lazy and FastV sweeps
    python cli.py perplexity --model DIR ...                    perplexity of a text model with lazy plans
    python cli.py bench --model DIR ...                         speed and memory against transformers
    python cli.py serve --model DIR --port P ...                an OpenAI-compatible server (docs/serving.md)
    python cli.py loadtest --url URL -n N --concurrency C       throughput, TTFT and TPOT of a running server

Bad input ends with a one-line message on stderr and exit status 2.
"""

from __future__ import annotations

import sys

from minilazy.commands import COMMANDS, DEFAULT_COMMAND
from minilazy.errors import InputError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}, or give flags only "
              "to answer a question (python cli.py --help)", file=sys.stderr)
        return 2
    name = argv[0] if argv and argv[0] in COMMANDS else DEFAULT_COMMAND
    if argv and argv[0] == name:
        argv = argv[1:]
    command = COMMANDS[name]
    args = command.parser().parse_args(argv)
    try:
        return command.run(args) or 0
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
