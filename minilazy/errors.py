"""Errors that mean "the input is wrong", reported to users as one line (exit status 2)."""


class InputError(ValueError):
    """Bad user input: a missing or malformed file, an unsupported model, an empty prompt..."""
