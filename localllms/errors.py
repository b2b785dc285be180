"""One exception type for problems the user can fix.

Every stage raises :class:`UserError` with a single sentence that says what is
wrong and what to do; the command line prints that sentence without a traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""
