"""The client: submit tasks, wait for them (one, many, or as they complete), cancel them,
read stats, and start and steer workflows."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import httpx

from ._errors import TaskFailed, Unavailable, WaitTimeout, WrangleError, error_from

#: Most tasks (and ids) in one call; larger batches are split.
MAX_BATCH = 10_000

_NDJSON = "application/x-ndjson"

#: A request without a body (``None`` is sent as JSON ``null``).
_NO_BODY: Any = object()


@dataclass
class Task:
    """A task to submit. ``timeout``, ``delay`` are in seconds."""

    task_type: str
    payload: Any = None
    priority: Optional[Union[str, int]] = None
    timeout: Optional[float] = None
    retries: Optional[int] = None
    labels: Sequence[str] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: Optional[str] = None
    delay: Optional[float] = None

    def to_json(self) -> Dict[str, Any]:
        body: Dict[str, Any] = {"task_type": self.task_type, "payload": self.payload}
        if self.priority is not None:
            body["priority"] = self.priority
        if self.timeout is not None:
            body["timeout_ms"] = max(1, int(self.timeout * 1000))
        if self.retries is not None:
            body["retries"] = self.retries
        if self.labels:
            body["labels"] = list(self.labels)
        if self.metadata:
            body["metadata"] = dict(self.metadata)
        if self.idempotency_key is not None:
            body["idempotency_key"] = self.idempotency_key
        if self.delay is not None:
            body["delay_ms"] = int(self.delay * 1000)
        return body


TaskLike = Union[Task, Mapping[str, Any]]


def _task_json(t: TaskLike) -> Dict[str, Any]:
    return t.to_json() if isinstance(t, Task) else dict(t)


@dataclass
class TaskResult:
    """How one task ended: ``status`` is ``completed``, ``failed``, ``cancelled`` or
    ``timeout``; ``index`` is its place in a ``run_many`` batch."""

    id: str
    status: str
    result: Any = None
    error: Optional[str] = None
    index: Optional[int] = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def value(self) -> Any:
        """The result, or :class:`TaskFailed` when the task did not complete."""
        if not self.ok:
            raise TaskFailed(self.id, self.status, self.error)
        return self.result

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TaskResult":
        return cls(
            id=d["id"],
            status=d["status"],
            result=d.get("result"),
            error=d.get("error"),
            index=d.get("index"),
        )


def _chunks(items: Sequence[Any], size: int = MAX_BATCH) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Client:
    """A connection to a wrangle coordinator's HTTP API (thread-safe; keeps connections
    alive). ``token`` is sent as ``Authorization: Bearer``. Answers 503 and 429 (the
    queue is full or busy; nothing was accepted) are retried ``retries`` times with the
    server's ``Retry-After``; connection failures are retried for reads only.

    >>> with Client("http://127.0.0.1:7700", token="...") as c:  # doctest: +SKIP
    ...     print(c.run("echo", {"hi": 1}))
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:7700",
        token: Optional[str] = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        http: Optional[httpx.Client] = None,
    ) -> None:
        headers = {"accept": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.retries = retries
        self._http = http or httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, read=None),
            limits=httpx.Limits(max_keepalive_connections=32, max_connections=64),
        )
        if http is not None:
            self._http.headers.update(headers)

    def __repr__(self) -> str:  # the token stays out of it
        return f"Client({self.url!r})"

    # -- plumbing ---------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = _NO_BODY,
        *,
        params: Optional[Mapping[str, Any]] = None,
        idempotent: bool = False,
    ) -> Any:
        """One API call; the decoded JSON answer, or a :class:`WrangleError`."""
        content = None if body is _NO_BODY else json.dumps(body, separators=(",", ":"))
        headers = {"content-type": "application/json"} if content is not None else None
        attempt = 0
        while True:
            try:
                res = self._http.request(
                    method, path, content=content, headers=headers, params=params
                )
            except httpx.TransportError as e:
                if idempotent and attempt < self.retries:
                    attempt += 1
                    time.sleep(min(0.1 * 2**attempt, 2.0))
                    continue
                raise WrangleError(f"cannot reach {self.url}: {e}") from e
            if res.status_code in (429, 503) and attempt < self.retries:
                attempt += 1
                time.sleep(_retry_after(res, attempt))
                continue
            return _decode(res)

    # -- tasks ------------------------------------------------------------------------

    def submit(self, task_type: str, payload: Any = None, **options: Any) -> str:
        """Submits one task; its id. ``options`` are :class:`Task`'s fields."""
        task = Task(task_type, payload, **options)
        return self.submit_many([task])[0]

    def submit_many(self, tasks: Iterable[TaskLike]) -> List[str]:
        """Submits many tasks (each batch of up to 10,000 all or none); their ids, in
        order."""
        ids: List[str] = []
        for chunk in _chunks([_task_json(t) for t in tasks]):
            answer = self.request("POST", "/tasks", {"tasks": list(chunk)})
            ids.extend(t["id"] for t in answer["tasks"])
        return ids

    def get(self, task_id: str) -> Dict[str, Any]:
        """Everything known about a task: status, options, input, result or error,
        attempts."""
        return self.request("GET", f"/tasks/{task_id}", idempotent=True)

    def wait(self, task_id: str, timeout: float = 30.0) -> Any:
        """Waits for a task; its result. :class:`TaskFailed` when it failed, was cancelled
        or timed out; :class:`WaitTimeout` when it is still unfinished after
        ``timeout``."""
        results = self.wait_many([task_id], timeout=timeout)
        return results[task_id].value()

    def wait_many(self, task_ids: Sequence[str], timeout: float = 30.0) -> Dict[str, TaskResult]:
        """Waits for many tasks in one call per 10,000; every result by id.
        :class:`WaitTimeout` (naming the unfinished) when some are unfinished after
        ``timeout``; :class:`NotFound` names unknown ids."""
        out: Dict[str, TaskResult] = {}
        for r in self.as_completed(task_ids, timeout=timeout):
            out[r.id] = r
        return out

    def as_completed(self, task_ids: Sequence[str], timeout: float = 30.0) -> Iterator[TaskResult]:
        """Yields each task's result as it finishes (finished ones first), streamed over
        one request per 10,000 ids."""
        ids = list(dict.fromkeys(task_ids))
        deadline = time.monotonic() + timeout
        for chunk in _chunks(ids):
            left = max(0.0, deadline - time.monotonic())
            yield from self._stream(
                "/tasks/wait", {"ids": list(chunk), "timeout_secs": left}, None
            )

    def run_many(self, tasks: Iterable[TaskLike], timeout: float = 60.0) -> List[TaskResult]:
        """Submits tasks and waits for them on the same request (one per 10,000); the
        results in the order the tasks were given."""
        all_tasks = [_task_json(t) for t in tasks]
        results: List[TaskResult] = []
        deadline = time.monotonic() + timeout
        for chunk in _chunks(all_tasks):
            left = max(0.0, deadline - time.monotonic())
            got: List[Optional[TaskResult]] = [None] * len(chunk)
            params = {"timeout": f"{int(left * 1000)}ms"}
            for r in self._stream("/tasks/run", list(chunk), params):
                assert r.index is not None
                got[r.index] = r
            results.extend(r for r in got if r is not None)
        return results

    def run(self, task_type: str, payload: Any = None, timeout: float = 60.0, **options: Any) -> Any:
        """Submits one task and waits for its result."""
        (r,) = self.run_many([Task(task_type, payload, **options)], timeout=timeout)
        return r.value()

    def map(self, task_type: str, payloads: Iterable[Any], timeout: float = 60.0) -> List[Any]:
        """Runs one task per payload; their results in order (:class:`TaskFailed` for the
        first that did not complete)."""
        return [r.value() for r in self.run_many([Task(task_type, p) for p in payloads], timeout)]

    def _stream(self, path: str, body: Any, params: Optional[Mapping[str, Any]]) -> Iterator[TaskResult]:
        content = json.dumps(body, separators=(",", ":"))
        headers = {"content-type": "application/json", "accept": _NDJSON}
        attempt = 0
        while True:
            with self._http.stream("POST", path, content=content, headers=headers, params=params) as res:
                if res.status_code in (429, 503) and attempt < self.retries:
                    attempt += 1
                    res.read()
                    time.sleep(_retry_after(res, attempt))
                    continue
                if res.status_code >= 400:
                    res.read()
                    _decode(res)
                end: Optional[Dict[str, Any]] = None
                for line in res.iter_lines():
                    if not line:
                        continue
                    d = json.loads(line)
                    if d.get("done"):
                        end = d
                    elif "status" in d:
                        yield TaskResult.from_json(d)
                if end is None:
                    raise WrangleError("the result stream ended early", status=res.status_code)
                if end.get("not_found"):
                    raise error_from(
                        404,
                        {"error": {"code": "not_found", "message": f"no such tasks: {', '.join(end['not_found'])}"}},
                        "",
                    )
                if end.get("unfinished"):
                    raise WaitTimeout(
                        f"{len(end['unfinished'])} tasks unfinished when the wait ended",
                        end["unfinished"],
                    )
                return

    def cancel(self, task_id: str) -> str:
        """Cancels a task (a running one is told to stop); the status it had."""
        return self.request("DELETE", f"/tasks/{task_id}")["previous_status"]

    def requeue(self, task_id: str) -> None:
        """Puts a dead-lettered task back in the queue."""
        self.request("POST", f"/tasks/{task_id}/requeue")

    def list(self, status: Optional[str] = None, limit: int = 100) -> List[Dict[str, Any]]:
        """Tasks with ``status`` (all when None), oldest first."""
        params: Dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        answer = self.request("GET", "/tasks", params=params, idempotent=True)
        return answer["tasks"] if isinstance(answer, dict) else answer

    def stats(self) -> Dict[str, Any]:
        """The coordinator's counters (queue, pools, workers, nodes)."""
        return self.request("GET", "/stats", idempotent=True)

    def workers(self) -> List[Dict[str, Any]]:
        """Every worker: local, on nodes, and pulling over HTTP."""
        return self.request("GET", "/workers", idempotent=True)

    # -- workflows --------------------------------------------------------------------

    def register_workflow(self, definition: Mapping[str, Any]) -> Dict[str, Any]:
        """Registers a workflow from its JSON definition; its name and version."""
        return self.request("POST", "/workflows", dict(definition))

    def start_workflow(self, name: str, input: Any = None) -> str:
        """Starts a run of the newest version of workflow ``name``; the run's id."""
        return self.request("POST", f"/workflows/{name}/runs", input)["id"]

    def get_run(self, run_id: str) -> Dict[str, Any]:
        """A workflow run's snapshot: status, steps done and total, outputs."""
        return self.request("GET", f"/workflows/runs/{run_id}", idempotent=True)

    def wait_run(self, run_id: str, timeout: float = 60.0) -> Dict[str, Any]:
        """Waits for a run to end; its snapshot (:class:`WaitTimeout` if it did not)."""
        res = self._http.get(
            f"/workflows/runs/{run_id}/wait", params={"timeout": f"{int(timeout * 1000)}ms"}
        )
        body = _decode(res)
        if res.status_code == 202:
            raise WaitTimeout(f"run {run_id} still {body.get('status')}", [run_id])
        return body

    def control_run(self, run_id: str, action: str) -> Dict[str, Any]:
        """``pause``, ``resume``, ``cancel`` or ``retry`` a run."""
        return self.request("POST", f"/workflows/runs/{run_id}/{action}")


def _retry_after(res: httpx.Response, attempt: int) -> float:
    try:
        return min(float(res.headers.get("retry-after", "")), 30.0)
    except ValueError:
        return min(0.1 * 2**attempt, 5.0)


def _decode(res: httpx.Response) -> Any:
    text = res.text
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    if res.status_code >= 400:
        raise error_from(res.status_code, body, text)
    return body
