"""The one exception type for mistakes a user can make.

``UserError`` subclasses ``ValueError`` so that library callers can catch the familiar type; the
CLI turns it (and ``FileNotFoundError``) into one line on stderr and exit status 2.
"""


class UserError(ValueError):
    """A bad argument, path, file or shape supplied by the user; the message says what was expected."""
