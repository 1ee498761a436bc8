"""The one exception type the command line turns into a short message and exit code 2."""


class TailorMindError(Exception):
    """Bad input, a bad config or a missing file, explained in one paragraph for the person who ran us."""

    exit_code = 2
