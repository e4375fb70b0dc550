"""The one exception type users can cause. The CLI prints its message as one line and exits non-zero."""


class SIBenchError(Exception):
    """A problem with the user's input or environment (not a bug)."""
