class CliError(Exception):
    """A user-facing failure: printed as one line, without a traceback."""
