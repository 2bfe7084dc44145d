"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class BenchError(Exception):
    """Bad input or a broken cache. The message is one line and names the fix."""

    exit_code = 2
