class ZooError(Exception):
    """A user-facing problem (bad name, missing or corrupt weights, offline with nothing cached).

    The message says what went wrong and what to do; the CLI prints it without a traceback.
    """
