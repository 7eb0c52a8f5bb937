"""The client against the real coordinator program."""

from __future__ import annotations

import threading
import uuid

import pytest

from conftest import READ_TOKEN, Coordinator
from wrangle_client import (
    BadRequest,
    Client,
    Forbidden,
    NotFound,
    Task,
    TaskFailed,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)


def test_one_task_runs_and_its_result_comes_back(client: Client) -> None:
    assert client.run("echo", {"hello": "world"}) == {"hello": "world"}
    task_id = client.submit("echo", [1, 2, 3], priority="high", retries=1)
    assert client.wait(task_id) == [1, 2, 3]
    task = client.get(task_id)
    assert task["status"] == "completed"
    assert task["options"]["priority"] == "high"


def test_many_tasks_are_awaited_as_they_complete(client: Client) -> None:
    ids = client.submit_many([{"task_type": "echo", "payload": i} for i in range(2000)])
    assert len(set(ids)) == 2000
    seen = {}
    for r in client.as_completed(ids, timeout=60):
        assert r.id not in seen, "a result came twice"
        seen[r.id] = r.value()
    assert [seen[i] for i in ids] == list(range(2000))
    assert client.wait_many(ids[:10])[ids[3]].result == 3


def test_run_many_keeps_the_order_of_the_batch(client: Client) -> None:
    results = client.run_many([Task("echo", {"i": i}) for i in range(500)])
    assert [r.result for r in results] == [{"i": i} for i in range(500)]
    assert all(r.index == i for i, r in enumerate(results))
    assert client.map("echo", ["a", "b"]) == ["a", "b"]


def test_failures_are_exceptions_with_the_error(client: Client) -> None:
    with pytest.raises(TaskFailed) as e:
        client.run("fail", {"mode": "permanent", "message": "no good"})
    assert e.value.task_status == "failed"
    assert e.value.error == "no good"
    # Retried until the attempt that succeeds.
    assert client.run("fail", {"succeed_on_attempt": 2}, retries=2) is not None


def test_bad_input_names_the_field_and_nothing_is_accepted(client: Client) -> None:
    before = client.stats()["queue"]["submitted"]
    with pytest.raises(BadRequest) as e:
        client.submit_many([Task("echo", 1), Task("no-such-type", 2)])
    assert e.value.status == 400
    assert e.value.code == "bad_request"
    assert e.value.field is not None and e.value.field.endswith("task_type")
    with pytest.raises(BadRequest) as e:
        client.submit("echo", 1, priority="urgent")
    assert e.value.field is not None and e.value.field.endswith("priority")
    assert client.stats()["queue"]["submitted"] == before


def test_tokens_are_checked(coordinator: Coordinator) -> None:
    with coordinator.client("wrong-token") as c, pytest.raises(Unauthorized):
        c.stats()
    with coordinator.client(READ_TOKEN) as c:
        assert "queue" in c.stats()
        with pytest.raises(Forbidden):
            c.submit("echo", 1)
    assert "t0ken" not in repr(coordinator.client())


def test_a_wait_that_runs_out_names_the_unfinished_and_cancel_stops_them(client: Client) -> None:
    task_id = client.submit("sleep", {"ms": 60_000})
    with pytest.raises(WaitTimeout) as e:
        client.wait(task_id, timeout=0.3)
    assert e.value.unfinished == [task_id]
    assert client.cancel(task_id) in ("queued", "running")
    with pytest.raises(TaskFailed) as failed:
        client.wait(task_id)
    assert failed.value.task_status == "cancelled"


def test_unknown_ids_are_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        client.wait_many([str(uuid.uuid4())])
    with pytest.raises(NotFound):
        client.get(str(uuid.uuid4()))


def test_workflows_start_and_finish(client: Client) -> None:
    name = f"py-flow-{uuid.uuid4().hex[:8]}"
    client.register_workflow(
        {
            "name": name,
            "steps": [
                {"kind": "task", "name": "first", "task_type": "echo", "input": {"key": "x"}, "output_key": "y"},
                {"kind": "task", "name": "second", "task_type": "echo", "input": {"key": "y"}, "output_key": "z"},
            ],
        }
    )
    run_id = client.start_workflow(name, {"x": 41})
    run = client.wait_run(run_id, timeout=30)
    assert run["status"] == "completed", run
    assert run["state"]["z"] == 41
    assert client.get_run(run_id)["steps_completed"] == 2
    # A run's own options: its checkpoint mode, and a timeout it gets a deadline from.
    run_id = client.start_workflow(name, {"x": 1}, checkpoint="overlapped", timeout=60)
    run = client.get_run(run_id)
    assert run["checkpoint"] == "overlapped", run
    assert run["deadline_ms"] == run["created_at_ms"] + 60_000, run
    assert client.wait_run(run_id, timeout=30)["state"]["z"] == 1
    with pytest.raises(BadRequest) as e:
        client.start_workflow(name, {"x": 1}, checkpoint="never")
    assert e.value.field == "checkpoint", repr(e.value)


def test_a_full_queue_is_retried_then_reported(small_queue: Coordinator) -> None:
    with small_queue.client(retries=1) as c:
        # A pulling worker declares a type nobody runs: its task waits, filling the queue.
        c.request("POST", "/workers/lease", {"worker": "hold", "task_types": ["py.hold"]})
        blocker = c.submit("py.hold", 1)
        with pytest.raises(Unavailable) as e:
            c.submit("py.hold", 2)
        assert e.value.status == 503
    with small_queue.client(retries=5) as c:
        # The place frees up while the client waits out Retry-After: its retry is taken.
        threading.Timer(0.3, lambda: c.cancel(blocker)).start()
        second = c.submit("py.hold", 3)
        assert c.get(second)["status"] == "queued"
        c.cancel(second)
