"""The one error type ganinv raises for anything a user or an untrusted file got wrong.

Every loader turns any failure of an untrusted file (checkpoint, card, result folder, direction file,
image, upload) into a `GanInvError` (or a subclass) whose message is one line naming the file and the
problem. The CLI prints that line and exits non-zero; the web UI shows it. Subclasses derive from
`ValueError` too, so code that caught `ValueError` keeps working.
"""
from __future__ import annotations


class GanInvError(ValueError):
    """A user mistake or an unusable input: the message is one line that names the input and the problem."""
