"""The one exception type whose message reaches the user as a one-line error."""


class LoaderError(Exception):
    """An error with a one-line, user-facing message; the CLI prints it and exits non-zero."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class UsageError(LoaderError):
    """Bad input from the user (ids, arguments, files): exit code 2."""

    exit_code = 2
