"""Errors that mean "the user asked for something impossible", as opposed to bugs.

The CLI turns these into one line on stderr and exit code 2; everything else is a bug
and keeps its traceback.
"""


class UserInputError(ValueError):
    """Bad user input: a malformed action string, a wrong-shaped trajectory, a missing file."""
