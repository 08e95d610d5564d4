"""The one exception every wire decoder raises."""
from __future__ import annotations


class MalformedMessage(ValueError):
    """Bytes that are not a valid LISP message.

    `reason` says what is wrong, `offset` where in the decoded buffer (bytes
    from its start; -1 when the problem is not tied to a position, e.g. a
    decoded address that cannot become an EidPrefix).
    """

    def __init__(self, reason: str, offset: int = -1) -> None:
        super().__init__(reason, offset)
        self.reason = reason
        self.offset = offset

    def __str__(self) -> str:
        if self.offset < 0:
            return self.reason
        return f"{self.reason} at offset {self.offset}"

    def __reduce__(self) -> tuple[type[MalformedMessage], tuple[str, int | None]]:  # keep pickling (multiprocessing, pytest-xdist) working
        return (type(self), (self.reason, self.offset))
