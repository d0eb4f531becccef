"""Errors that carry the CLI exit code (README, "Exit codes").

0 ok · 2 bad input/usage · 3 target unreachable · 4 quality gate failed · 1 unexpected error.
The message is one line: it is printed as-is after ``error:``.
"""


class OnnxPruneError(Exception):
    """Base class: an expected failure with a one-line message and an exit code."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # force a single line


class InputError(OnnxPruneError):
    """The user's model, data or arguments are unusable (exit 2)."""

    exit_code = 2


class TargetUnreachableError(OnnxPruneError):
    """The requested compression target cannot be met (exit 3)."""

    exit_code = 3


class QualityGateError(OnnxPruneError):
    """The compressed model fails the ``--max-drop`` quality gate (exit 4)."""

    exit_code = 4


class InternalError(OnnxPruneError):
    """A check of onnxprune's own promises failed (a bug; exit 1): e.g. a plan over the budget it was made
    for."""

    exit_code = 1
