"""One exception type for bad user input, so the CLI can print it as one clear line."""


class GroundupError(ValueError):
    """A problem the user can fix: a bad key, file, column or value. The message names it."""
