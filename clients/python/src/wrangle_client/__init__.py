"""Python client and worker for wrangle.

>>> from wrangle_client import Client, Worker
>>> c = Client(["http://10.0.0.1:7700", "http://10.0.0.2:7700"], token="...")  # doctest: +SKIP
>>> ids = c.submit_many([{"task_type": "echo", "payload": i} for i in range(100)])  # doctest: +SKIP
>>> for r in c.as_completed(ids):                              # doctest: +SKIP
...     print(r.id, r.value())
"""

from ._client import MAX_BATCH, Client, Task, TaskResult
from ._errors import (
    BadRequest,
    Conflict,
    ConnectionLost,
    Forbidden,
    NotFound,
    TaskFailed,
    Unauthorized,
    Unavailable,
    WaitTimeout,
    WrangleError,
)
from ._worker import PermanentError, RetryLater, TaskContext, Worker

__all__ = [
    "MAX_BATCH",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionLost",
    "Forbidden",
    "NotFound",
    "PermanentError",
    "RetryLater",
    "Task",
    "TaskContext",
    "TaskFailed",
    "TaskResult",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
    "Worker",
    "WrangleError",
]
