"""The client: submit tasks, wait for them (one, many, or as they complete), cancel them,
read stats, and start and steer workflows."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import httpx

from ._errors import ConnectionLost, TaskFailed, Unavailable, WaitTimeout, WrangleError, error_from
from ._leader import Coordinators, base_of, parse_urls

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


def _keyed(tasks: Iterable[Mapping[str, Any]]) -> bool:
    """Whether every task carries an idempotency key: submitting them twice makes nothing
    twice."""
    return all(t.get("idempotency_key") for t in tasks)


class _Broken(WrangleError):
    """A result stream ended before its last line (the connection broke)."""


class _Stalled:
    """Streams that keep breaking with nothing read: given up on after
    ``failover_timeout`` seconds."""

    def __init__(self, failover_timeout: float) -> None:
        self.failover_timeout = failover_timeout
        self.since: Optional[float] = None

    def check(self, broken: _Broken, progress: bool) -> None:
        now = time.monotonic()
        if progress or self.since is None:
            self.since = now
        elif now - self.since > self.failover_timeout:
            raise WrangleError(f"{broken.message} (again, for {self.failover_timeout:g} s)") from broken


def _chunks(items: Sequence[Any], size: int = MAX_BATCH) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Client:
    """A connection to wrangle's coordinators' HTTP API (thread-safe; keeps connections
    alive). ``token`` is sent as ``Authorization: Bearer``.

    ``url`` names one coordinator or several (a list, or comma-separated): calls follow a
    standby's redirect to the leader (with the token) and remember it; when the
    coordinator in use cannot be reached or knows no leader yet, the others are tried for
    up to ``failover_timeout`` seconds per call. Waits that break because the coordinator
    died carry on, for the same tasks, on the one that took over.

    Answers 503 and 429 (the queue is full or busy; nothing was accepted) are retried
    ``retries`` times with the server's ``Retry-After``. A request whose connection broke
    after it was sent is sent again only when that is safe: reads, waits, worker reports,
    and submits whose tasks all carry an ``idempotency_key``; otherwise
    :class:`ConnectionLost`.

    >>> with Client("http://127.0.0.1:7700", token="...") as c:  # doctest: +SKIP
    ...     print(c.run("echo", {"hi": 1}))
    """

    def __init__(
        self,
        url: Union[str, Sequence[str]] = "http://127.0.0.1:7700",
        token: Optional[str] = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        failover_timeout: float = 10.0,
        http: Optional[httpx.Client] = None,
    ) -> None:
        headers = {"accept": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._coordinators = Coordinators(parse_urls(url), failover_timeout)
        self.retries = retries
        self.timeout = timeout
        self._http = http or httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, read=None),
            limits=httpx.Limits(max_keepalive_connections=32, max_connections=64),
            follow_redirects=False,
        )
        if http is not None:
            self._http.headers.update(headers)

    @property
    def url(self) -> str:
        """The coordinator calls go to now: the leader, once a standby named it."""
        return self._coordinators.current

    @property
    def urls(self) -> List[str]:
        """The coordinators given, in the order they are tried."""
        return list(self._coordinators.urls)

    def __repr__(self) -> str:  # the token stays out of it
        urls = self._coordinators.urls
        return f"Client({urls[0]!r})" if len(urls) == 1 else f"Client({urls!r})"

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
        wait: Optional[float] = None,
    ) -> Any:
        """One API call on the leader; the decoded JSON answer, or a
        :class:`WrangleError`. ``idempotent``: sending it twice does no harm, so it is sent
        again when its connection breaks. ``wait``: the longest the server may hold the
        call before it answers (a long-poll), so a coordinator silent for longer than that
        plus ``timeout`` is given up on."""
        content = None if body is _NO_BODY else json.dumps(body, separators=(",", ":"))
        headers = {"content-type": "application/json"} if content is not None else None
        timeout = None if wait is None else httpx.Timeout(self.timeout, read=wait + self.timeout)
        attempt = 0
        while True:
            res = self._coordinators.send(
                self._http,
                method,
                path,
                content=content,
                headers=headers,
                params=params,
                timeout=timeout,
                resend=idempotent,
            )
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
            answer = self.request("POST", "/tasks", {"tasks": list(chunk)}, idempotent=_keyed(chunk))
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
        one request per 10,000 ids. A stream that breaks (the coordinator died) is opened
        again, on the leader, for the tasks not yet finished."""
        ids = list(dict.fromkeys(task_ids))
        deadline = time.monotonic() + timeout
        for chunk in _chunks(ids):
            pending = list(chunk)
            stalled = _Stalled(self._coordinators.failover_timeout)
            while True:
                left = max(0.0, deadline - time.monotonic())
                seen = set()
                try:
                    for r in self._stream("/tasks/wait", {"ids": pending, "timeout_secs": left}, None, left, True):
                        seen.add(r.id)
                        yield r
                    break
                except _Broken as e:
                    stalled.check(e, progress=bool(seen))
                    pending = [i for i in pending if i not in seen]
                    if not pending:
                        break

    def run_many(self, tasks: Iterable[TaskLike], timeout: float = 60.0) -> List[TaskResult]:
        """Submits tasks and waits for them on the same request (one per 10,000); the
        results in the order the tasks were given. When the stream breaks after it was
        sent, it is sent again for the unfinished tasks if they all carry an
        ``idempotency_key`` (else :class:`ConnectionLost`)."""
        all_tasks = [_task_json(t) for t in tasks]
        results: List[TaskResult] = []
        deadline = time.monotonic() + timeout
        for chunk in _chunks(all_tasks):
            got: List[Optional[TaskResult]] = [None] * len(chunk)
            # Where each task of the batch sent is in the chunk.
            place = list(range(len(chunk)))
            stalled = _Stalled(self._coordinators.failover_timeout)
            while True:
                left = max(0.0, deadline - time.monotonic())
                params = {"timeout": f"{int(left * 1000)}ms"}
                batch = [chunk[i] for i in place]
                try:
                    for r in self._stream("/tasks/run", batch, params, left, _keyed(batch)):
                        assert r.index is not None
                        r.index = place[r.index]
                        got[r.index] = r
                    break
                except _Broken as e:
                    stalled.check(e, progress=len(place) > sum(got[i] is None for i in place))
                    place = [i for i in place if got[i] is None]
                    if not place:
                        break
                    if not _keyed(chunk[i] for i in place):
                        raise ConnectionLost(
                            f"{e.message}; {len(place)} tasks unfinished, and without idempotency keys "
                            "they are not sent again"
                        ) from e
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

    def _stream(
        self, path: str, body: Any, params: Optional[Mapping[str, Any]], wait: float, resend: bool
    ) -> Iterator[TaskResult]:
        """The results of one NDJSON stream held open up to ``wait`` seconds;
        :class:`_Broken` when it ends before its last line."""
        content = json.dumps(body, separators=(",", ":"))
        headers = {"content-type": "application/json", "accept": _NDJSON}
        # The server ends the stream by ``wait``: silence for much longer is a dead peer.
        timeout = httpx.Timeout(self.timeout, read=wait + self.timeout)
        attempt = 0
        while True:
            res = self._coordinators.send(
                self._http,
                "POST",
                path,
                content=content,
                headers=headers,
                params=params,
                timeout=timeout,
                stream=True,
                resend=resend,
            )
            try:
                if res.status_code in (429, 503) and attempt < self.retries:
                    attempt += 1
                    res.read()
                    time.sleep(_retry_after(res, attempt))
                    continue
                if res.status_code >= 300:
                    res.read()
                    _decode(res)
                end: Optional[Dict[str, Any]] = None
                try:
                    for line in res.iter_lines():
                        if not line:
                            continue
                        d = json.loads(line)
                        if d.get("done"):
                            end = d
                        elif "status" in d:
                            yield TaskResult.from_json(d)
                except httpx.TransportError as e:
                    # The next attempt starts at another coordinator (a frozen one would
                    # hold it up again).
                    self._coordinators.failed(base_of(res.request.url, path))
                    raise _Broken(f"the result stream from {res.request.url} broke: {type(e).__name__}: {e}") from e
                if end is None:
                    self._coordinators.failed(base_of(res.request.url, path))
                    raise _Broken(f"the result stream from {res.request.url} ended early", status=res.status_code)
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
            finally:
                res.close()

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

    def start_workflow(
        self,
        name: str,
        input: Any = None,
        *,
        checkpoint: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> str:
        """Starts a run of the newest version of workflow ``name``; the run's id.
        ``checkpoint`` (``"before_next"`` or ``"overlapped"``) replaces the definition's
        checkpoint mode for this run; ``timeout`` (seconds) fails the run, cancelling its
        running steps, if it has not ended that long after it started."""
        params: Dict[str, str] = {}
        if checkpoint is not None:
            params["checkpoint"] = checkpoint
        if timeout is not None:
            params["timeout"] = f"{max(1, round(timeout * 1000))}ms"
        return self.request("POST", f"/workflows/{name}/runs", input, params=params or None)["id"]

    def get_run(self, run_id: str) -> Dict[str, Any]:
        """A workflow run's snapshot: status, steps done and total, outputs."""
        return self.request("GET", f"/workflows/runs/{run_id}", idempotent=True)

    def wait_run(self, run_id: str, timeout: float = 60.0) -> Dict[str, Any]:
        """Waits for a run to end; its snapshot (:class:`WaitTimeout` if it did not)."""
        res = self._coordinators.send(
            self._http,
            "GET",
            f"/workflows/runs/{run_id}/wait",
            params={"timeout": f"{int(timeout * 1000)}ms"},
            timeout=httpx.Timeout(self.timeout, read=timeout + self.timeout),
            resend=True,
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
    if res.status_code >= 300:
        # A redirect reaching here was not the standby protocol's (those are followed).
        raise error_from(res.status_code, body, text)
    return body
