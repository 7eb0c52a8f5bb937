"""Errors: every API error as a Python exception with the API's status, code and field."""

from __future__ import annotations

from typing import Any, Optional


class WrangleError(Exception):
    """An error answered by the coordinator (or a failure to reach it).

    ``status`` is the HTTP status (0 when the coordinator could not be reached), ``code``
    the API's stable code (``bad_request``, ``not_found``, ``conflict``, ...), ``field``
    the request field at fault when the API names one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str = "",
        field: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.field = field

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status={self.status}, "
            f"code={self.code!r}, field={self.field!r})"
        )


class BadRequest(WrangleError):
    """400: the request is malformed; ``field`` names what to fix."""


class Unauthorized(WrangleError):
    """401: missing or wrong token."""


class Forbidden(WrangleError):
    """403: the token lacks the scope the route needs."""


class NotFound(WrangleError):
    """404: no such task, run, workflow or worker."""


class Conflict(WrangleError):
    """409: valid, but the state does not allow it (a stale lease, a finished task)."""


class Unavailable(WrangleError):
    """503 or 429 after the retries ran out: the queue is full, stopping, or busy."""


class ConnectionLost(WrangleError):
    """The request was sent but the connection broke (or the coordinator did not answer in
    time) before the answer came: it may have been acted on, so it was not sent again.
    Submits whose tasks all carry an ``idempotency_key`` are sent again instead."""


class TaskFailed(WrangleError):
    """A task ended without a result: failed, cancelled or timed out."""

    def __init__(self, task_id: str, status: str, error: Optional[str]) -> None:
        super().__init__(f"task {task_id} {status}: {error or status}", code=status)
        self.task_id = task_id
        self.task_status = status
        self.error = error


class WaitTimeout(WrangleError):
    """A wait ended before the task(s) finished."""

    def __init__(self, message: str, unfinished: Any = None) -> None:
        super().__init__(message, code="timeout")
        self.unfinished = list(unfinished or [])


_BY_STATUS = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: Unavailable,
    503: Unavailable,
}


def error_from(status: int, body: Any, text: str) -> WrangleError:
    """The exception for an error answer."""
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        message = str(detail.get("message", text))
        code = str(detail.get("code", ""))
        field = detail.get("field")
    elif isinstance(detail, str) and isinstance(body, dict):
        # A standby's answer: the kind of error, and the message beside it.
        message, code, field = str(body.get("message", text)), detail, None
    else:
        message, code, field = (text or f"HTTP {status}"), "", None
    cls = _BY_STATUS.get(status, WrangleError)
    return cls(message, status=status, code=code, field=field)
