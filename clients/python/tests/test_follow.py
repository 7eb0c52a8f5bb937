"""The client and the worker follow the leading coordinator: through a standby's redirect
(with the token), past a takeover in progress (``no_leader``), past a dead coordinator, and
across a coordinator that dies while they wait and lease."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Dict, Iterator, List

import pytest

from conftest import TOKEN, Coordinator, launch
from standby import Standby
from wrangle_client import Client, Task, TaskContext, TaskResult, Unavailable, Worker, WrangleError


def eventually(what: str, cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def dead_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def standby(coordinator: Coordinator) -> Iterator[Standby]:
    with Standby(coordinator.url, token=TOKEN) as s:
        yield s


def test_calls_follow_a_standby_to_the_leader_with_the_token(coordinator: Coordinator, standby: Standby) -> None:
    with Client(standby.url, TOKEN) as c:
        task_id = c.submit("echo", {"via": "standby"})
        assert c.url == coordinator.url, "the leader is remembered"
        assert c.wait(task_id) == {"via": "standby"}
        ids = c.submit_many([Task("echo", i) for i in range(50)])
        assert [c.wait_many(ids)[i].result for i in ids] == list(range(50))
        assert [r.result for r in c.run_many([Task("echo", i) for i in range(5)])] == list(range(5))
        assert c.get(task_id)["status"] == "completed"
    # Only the first call went through the standby, and it carried the token.
    assert standby.requests == [("POST", "/tasks")]
    assert standby.without_token == 0


def test_every_kind_of_call_is_followed_from_the_standby(coordinator: Coordinator, standby: Standby) -> None:
    # A fresh client per call: each one starts at the standby.
    def fresh() -> Client:
        return Client(standby.url, TOKEN)

    task_id = fresh().submit("echo", 1)
    assert fresh().wait(task_id) == 1
    assert fresh().wait_many([task_id])[task_id].result == 1
    assert [r.id for r in fresh().as_completed([task_id])] == [task_id]
    assert fresh().run("echo", 2) == 2
    assert "queue" in fresh().stats()
    assert fresh().list(limit=1)
    paths = [p.split("?")[0] for _, p in standby.requests]
    assert paths == ["/tasks", "/tasks/wait", "/tasks/wait", "/tasks/wait", "/tasks/run", "/stats", "/tasks"]
    # The query went along with the redirect.
    assert standby.requests[-1] == ("GET", "/tasks?limit=1")
    assert standby.without_token == 0


def test_a_takeover_in_progress_is_waited_out(coordinator: Coordinator) -> None:
    with Standby(coordinator.url, no_leader=2) as s, Client(s.url, TOKEN) as c:
        started = time.monotonic()
        task_id = c.submit("echo", "after the takeover")
        # Retry-After: 1 was honoured between the answers.
        assert time.monotonic() - started >= 1.0
        assert s.hits == 3, "two no_leader answers, then the redirect"
        assert c.wait(task_id) == "after the takeover"
    with Standby(coordinator.url, no_leader=1_000_000) as s, Client(s.url, TOKEN, failover_timeout=1.0) as c:
        with pytest.raises(Unavailable) as e:
            c.stats()
        assert e.value.code == "no_leader"
        assert "no leading coordinator answered within 1 s" in e.value.message
        assert "knows no leader yet" in e.value.message


def test_a_dead_coordinator_in_the_list_is_passed_over(coordinator: Coordinator, standby: Standby) -> None:
    dead = dead_url()
    with Client([dead, standby.url], TOKEN) as c:
        assert c.run("echo", "alive") == "alive"
        assert c.url == coordinator.url
        assert c.urls == [dead, standby.url]
    with Client(f"{dead},{coordinator.url}/", TOKEN) as c:
        assert c.run("echo", "second") == "second"
        assert c.url == coordinator.url
    with Client([dead], TOKEN, failover_timeout=0.5) as c:
        with pytest.raises(WrangleError) as e:
            c.stats()
        assert e.value.status == 0
        assert f"cannot reach {dead}/stats" in e.value.message


def test_redirects_that_must_not_be_followed_fail_clearly(coordinator: Coordinator) -> None:
    with Standby(coordinator.url) as third, Standby(third.url) as second, Standby(second.url) as first:
        with Client(first.url, TOKEN) as c:
            assert c.run("echo", "three hops") == "three hops"
        with Standby(first.url) as before, Client(before.url, TOKEN) as c:
            with pytest.raises(WrangleError) as e:
                c.submit("echo", "four hops")
            assert e.value.code == "redirect"
            assert "more than 3 redirects" in e.value.message
            assert before.hits == 1, "not retried"
    with Standby("ftp://127.0.0.1:21") as elsewhere, Client(elsewhere.url, TOKEN) as c:
        with pytest.raises(WrangleError) as e:
            c.stats()
        assert "which is not an http or https URL" in e.value.message
    with pytest.raises(ValueError):
        Client("ftp://127.0.0.1:21")


@pytest.fixture
def workers() -> Iterator[Callable[[Worker], Worker]]:
    """Starts workers on threads; stops them after the test (they must stop)."""
    started = []

    def start(w: Worker) -> Worker:
        started.append((w, w.start()))
        return w

    yield start
    for w, t in started:
        w.stop()
        t.join(timeout=30)
        assert not t.is_alive(), f"worker {w.name} did not stop"


def test_the_worker_follows_a_standby(coordinator: Coordinator, workers: Callable[[Worker], Worker]) -> None:
    with Standby(coordinator.url, no_leader=2, token=TOKEN) as s:
        w = workers(Worker(Client(s.url, TOKEN), "follower", {"py.follow": lambda n: n + 1}, poll_wait=0.5))
        with coordinator.client() as c:
            eventually("the worker to attach", lambda: any(x["id"] == "http:follower" for x in c.workers()))
            ids = c.submit_many([Task("py.follow", i) for i in range(100)])
            results = c.wait_many(ids, timeout=60)
        assert [results[i].result for i in ids] == [i + 1 for i in range(100)]
        eventually("the reports to count", lambda: w.completed == 100)
        assert s.hits == 3 and s.without_token == 0


def test_clients_and_workers_carry_on_with_the_coordinator_that_took_over(tmp_path: Any) -> None:
    """The coordinator dies while a task runs and a client waits for it; another one, on
    the same database, takes over (the standby now redirects to it). The worker leases
    the task again from it, its old attempt is told to stop and its report is refused
    without harm, and the client's wait ends with the new attempt's result."""
    database = {"WRANGLE_DATABASE_URL": f"sqlite://{tmp_path / 'takeover.db'}"}
    old = launch(database)
    new = None
    calls: Dict[str, int] = {"n": 0}
    first_started = threading.Event()
    stale_stopped = threading.Event()

    def handler(payload: Any, ctx: TaskContext) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            first_started.set()
            if ctx.cancelled.wait(60):
                stale_stopped.set()
            return "stale"
        return "fresh"

    s = Standby(old.url, token=TOKEN)
    w = Worker(
        Client(s.url, TOKEN, failover_timeout=60),
        "survivor",
        {"py.takeover": handler},
        poll_wait=0.5,
        heartbeat_interval=0.2,
    )
    worker = w.start()
    try:
        client = Client(s.url, TOKEN, failover_timeout=60)
        eventually("the worker to attach", lambda: any(x["id"] == "http:survivor" for x in client.workers()))
        task_id = client.submit("py.takeover", None, retries=3)
        assert first_started.wait(20)
        # The wait streams an echo task's result first: once it is read, the stream is
        # open on the first coordinator, waiting for the held task.
        echo_id = client.submit("echo", "first")
        seen: List[TaskResult] = []
        got_echo = threading.Event()

        def wait_both() -> None:
            for r in client.as_completed([echo_id, task_id], timeout=90):
                seen.append(r)
                got_echo.set()

        waiter = threading.Thread(target=wait_both)
        waiter.start()
        assert got_echo.wait(20)

        old.kill()
        new = launch(database)
        s.lead_to(new.url)

        waiter.join(90)
        assert [r.id for r in seen] == [echo_id, task_id]
        assert seen[1].value() == "fresh"
        assert client.url == new.url
        assert stale_stopped.wait(30), "the attempt the old coordinator leased was never told to stop"
        # The worker counts a report once its answer is back (the client may see the
        # result first).
        eventually("the reports to be counted", lambda: (w.completed, w.refused) == (1, 1))
        assert calls["n"] == 2
        assert client.get(task_id)["status"] == "completed"
        w.stop()
        worker.join(30)
        assert not worker.is_alive(), "the worker did not stop"
    finally:
        w.stop()
        worker.join(30)
        if new is not None:
            new.stop()
        old.kill()
        s.close()
