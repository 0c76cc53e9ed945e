"""The one exception type users see: a message that names what is wrong and where.

The CLI prints ``NerfzipError`` as a single line and exits non-zero; anything else is a bug and
keeps its traceback.
"""


class NerfzipError(Exception):
    """A problem with the user's input (a missing file, malformed JSON, a bad spec, ...)."""
