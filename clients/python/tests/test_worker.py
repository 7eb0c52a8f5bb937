"""Python functions as handlers through the worker protocol, against the real coordinator."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

import pytest

from conftest import Coordinator
from wrangle_client import (
    BadRequest,
    Client,
    Conflict,
    NotFound,
    PermanentError,
    TaskContext,
    TaskFailed,
    Worker,
)


def eventually(what: str, cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def running(coordinator: Coordinator) -> Iterator[Callable[..., Worker]]:
    """Starts workers on threads; stops them after the test."""
    started = []

    def start(name: str, handlers: "dict[str, Callable[..., Any]]", **kw: Any) -> Worker:
        w = Worker(coordinator.client(), name, handlers, poll_wait=0.5, **kw)
        started.append((w, w.start()))
        # Its first lease call declares its types: submits of them are accepted from then.
        with coordinator.client() as c:
            eventually(f"{name} to attach", lambda: any(x["id"] == f"http:{name}" for x in c.workers()))
        return w

    yield start
    for w, t in started:
        w.stop()
        t.join(timeout=30)
        assert not t.is_alive(), f"worker {w.name} did not stop"


def test_a_python_worker_runs_many_tasks_exactly_once(client: Client, running: Callable[..., Worker]) -> None:
    calls: "dict[int, int]" = {}
    lock = threading.Lock()

    def square(n: int) -> int:
        with lock:
            calls[n] = calls.get(n, 0) + 1
        return n * n

    w = running("squares", {"py.square": square}, concurrency=8)
    ids = client.submit_many([{"task_type": "py.square", "payload": n} for n in range(1000)])
    results = client.wait_many(ids, timeout=60)
    assert [results[i].value() for i in ids] == [n * n for n in range(1000)]
    assert calls == {n: 1 for n in range(1000)}
    eventually("the reports to be counted", lambda: w.completed == 1000)
    me = next(x for x in client.workers() if x["id"] == "http:squares")
    assert me["pool"] == "http"
    assert me["total_completed"] == 1000


def test_failures_retry_and_permanent_ones_fail(client: Client, running: Callable[..., Worker]) -> None:
    def flaky(payload: Any, ctx: TaskContext) -> Any:
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")
        return {"attempt": ctx.attempt}

    def broken(payload: Any) -> Any:
        raise PermanentError("cannot ever work")

    running("failing", {"py.flaky": flaky, "py.broken": broken})
    flaky_id = client.submit("py.flaky", None, retries=2)
    assert client.wait(flaky_id) == {"attempt": 2}
    attempts = client.get(flaky_id)["attempts"]
    assert attempts[0]["error"] == "RuntimeError: first try fails"
    broken_id = client.submit("py.broken", None, retries=5)
    with pytest.raises(TaskFailed) as e:
        client.wait(broken_id)
    assert e.value.error == "cannot ever work"
    assert len(client.get(broken_id)["attempts"]) == 1


def test_a_cancelled_task_is_told_to_stop(client: Client, running: Callable[..., Worker]) -> None:
    started = threading.Event()
    stopped = threading.Event()

    def patient(payload: Any, ctx: TaskContext) -> Any:
        started.set()
        ctx.progress(0.1, "waiting")
        if ctx.cancelled.wait(20):
            stopped.set()
        return "done"

    running("patient", {"py.patient": patient}, heartbeat_interval=0.1)
    task_id = client.submit("py.patient", None)
    assert started.wait(20)
    assert client.cancel(task_id) == "running"
    assert stopped.wait(20), "the handler never saw the cancellation"
    assert client.get(task_id)["status"] == "cancelled"


def test_stop_is_graceful(coordinator: Coordinator, client: Client) -> None:
    def slow(ms: int) -> int:
        time.sleep(ms / 1000)
        return ms

    w = Worker(coordinator.client(), "graceful", {"py.slow": slow}, concurrency=4, poll_wait=0.5)
    thread = w.start()
    eventually("graceful to attach", lambda: any(x["id"] == "http:graceful" for x in client.workers()))
    ids = client.submit_many([{"task_type": "py.slow", "payload": 300} for _ in range(4)])
    eventually("all four to run", lambda: all(client.get(i)["status"] == "running" for i in ids))
    w.stop()
    thread.join(30)
    assert not thread.is_alive()
    assert [client.get(i)["status"] for i in ids] == ["completed"] * 4
    assert not any(x["id"] == "http:graceful" for x in client.workers()), "it left"


def test_the_protocol_refuses_stale_and_unknown_reports(client: Client) -> None:
    lease = {"worker": "raw", "task_types": ["py.raw"], "max_tasks": 1}
    client.request("POST", "/workers/lease", lease)
    task_id = client.submit("py.raw", {"x": 1})
    (t,) = client.request("POST", "/workers/lease", dict(lease, wait_secs=5))["tasks"]
    assert t["task_id"] == task_id and t["payload"] == {"x": 1}
    # Someone else's token for the same task: refused, the task untouched.
    forged = t["token"].rsplit(".", 1)[0] + ".00000000deadbeef"
    with pytest.raises(Conflict):
        client.request("POST", f"/workers/tasks/{task_id}/complete", {"worker": "raw", "token": forged})
    assert client.get(task_id)["status"] == "running"
    # The worker leaves: its task goes back to the queue, and its reports are unknown.
    assert client.request("POST", "/workers/leave", {"worker": "raw"})["returned"] == 1
    with pytest.raises(NotFound):
        client.request("POST", f"/workers/tasks/{task_id}/complete", {"worker": "raw", "token": t["token"]})
    (again,) = client.request("POST", "/workers/lease", dict(lease, wait_secs=5))["tasks"]
    assert again["attempt"] == 2
    client.request(
        "POST", f"/workers/tasks/{task_id}/complete", {"worker": "raw", "token": again["token"], "result": "ok"}
    )
    assert client.wait(task_id) == "ok"
    with pytest.raises(BadRequest) as e:
        client.request("POST", "/workers/lease", dict(lease, max_tasks=5000))
    assert e.value.field == "max_tasks"
    client.request("POST", "/workers/leave", {"worker": "raw"})
