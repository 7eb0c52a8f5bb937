"""A worker that runs Python functions as wrangle task handlers, through the coordinator's
HTTP worker protocol (``/workers/lease`` and the rest)."""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ._client import Client
from ._errors import NotFound, WrangleError

log = logging.getLogger("wrangle_client.worker")

Handler = Callable[..., Any]


class PermanentError(Exception):
    """Raise from a handler to fail the task now, without retries."""


class RetryLater(Exception):
    """Raise from a handler to retry the task (while it has retries left) no sooner than
    ``after`` seconds."""

    def __init__(self, message: str = "retry later", after: Optional[float] = None) -> None:
        super().__init__(message)
        self.after = after


class TaskContext:
    """What a handler that takes two arguments gets besides the payload."""

    def __init__(self, worker: "Worker", lease: Mapping[str, Any]) -> None:
        self._worker = worker
        self.id: str = lease["task_id"]
        self.task_type: str = lease["task_type"]
        self.attempt: int = lease["attempt"]
        self.token: str = lease["token"]
        self.timeout: Optional[float] = lease.get("timeout_secs")
        #: The trace the task belongs to (32 hex digits): carry it into your spans and logs.
        self.trace_id: Optional[str] = lease.get("trace_id")
        #: Set when the task is cancelled or its lease is lost: stop soon.
        self.cancelled = threading.Event()

    def progress(self, fraction: float, message: str = "") -> None:
        """Publishes the attempt's progress (0 to 1) on the coordinator's event stream."""
        self._worker._progress(self, fraction, message)


def _takes_context(f: Handler) -> bool:
    try:
        params = [
            p
            for p in inspect.signature(f).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2


class Worker:
    """Runs Python functions for the task types they are registered under.

    A handler takes the task's payload (and optionally a :class:`TaskContext`) and
    returns its result (any JSON value). An exception fails the attempt: it is retried
    while the task has retries left, unless it is a :class:`PermanentError`.

    ``concurrency`` tasks run at once on a thread pool; leases are kept alive by
    heartbeats; reports go back in batches. :meth:`stop` is graceful: no new leases, the
    running tasks finish and are reported, then the worker leaves (anything it still held
    goes back to the queue at once).

    It follows the leading coordinator with its client: after a takeover it leases from
    the new leader, which does not know the leases the old one gave (their tasks run
    again). Those attempts are told to stop (``TaskContext.cancelled``) once a heartbeat
    finds the worker unknown or their leases void, and their reports are refused: counted
    in ``refused``.

    >>> w = Worker(Client(url, token), "py-1", {"square": lambda n: n * n})  # doctest: +SKIP
    >>> w.run()  # until stop() from another thread, or Ctrl-C                # doctest: +SKIP
    """

    def __init__(
        self,
        client: Client,
        name: str,
        handlers: Optional[Mapping[str, Handler]] = None,
        *,
        concurrency: int = 16,
        labels: Sequence[str] = (),
        poll_wait: float = 5.0,
        heartbeat_interval: Optional[float] = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.client = client
        self.name = name
        self.concurrency = concurrency
        self.labels = list(labels)
        self.poll_wait = poll_wait
        self.heartbeat_interval = heartbeat_interval
        self._handlers: Dict[str, Handler] = {}
        self._with_ctx: Dict[str, bool] = {}
        for task_type, f in (handlers or {}).items():
            self.register(task_type, f)
        self._stop = threading.Event()
        self._lock = threading.Condition()
        # The attempts running, by lease token (a task can run twice here when a takeover
        # handed it out again while its old attempt still ran).
        self._running: Dict[str, TaskContext] = {}
        self._reports: "queue.Queue[Optional[Dict[str, Any]]]" = queue.Queue()
        self.completed = 0
        self.failed = 0
        self.refused = 0

    def register(self, task_type: str, f: Handler) -> None:
        """Runs ``f`` for tasks of ``task_type``."""
        self._handlers[task_type] = f
        self._with_ctx[task_type] = _takes_context(f)

    def handler(self, task_type: str) -> Callable[[Handler], Handler]:
        """A decorator: ``@worker.handler("resize")``."""

        def wrap(f: Handler) -> Handler:
            self.register(task_type, f)
            return f

        return wrap

    # -- running ----------------------------------------------------------------------

    def run(self) -> None:
        """Leases and runs tasks until :meth:`stop` (or Ctrl-C), then leaves gracefully."""
        if not self._handlers:
            raise ValueError("no handlers registered")
        reporter = threading.Thread(target=self._report_loop, name=f"{self.name}-reports", daemon=True)
        beater = threading.Thread(target=self._heartbeat_loop, name=f"{self.name}-heartbeat", daemon=True)
        reporter.start()
        beater.start()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=self.name)
        try:
            self._lease_loop(pool)
        except KeyboardInterrupt:
            self._stop.set()
        finally:
            pool.shutdown(wait=True)
            self._reports.put(None)
            reporter.join()
            try:
                # Leaving twice is harmless (the second is answered 404).
                self.client.request("POST", "/workers/leave", {"worker": self.name}, idempotent=True)
            except NotFound:
                pass
            except WrangleError as e:
                log.warning("leaving failed: %s", e)

    def start(self) -> threading.Thread:
        """Runs the worker on a thread of its own."""
        t = threading.Thread(target=self.run, name=f"{self.name}-lease", daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        """Asks the worker to stop: no new leases; running tasks finish."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()

    def _lease_loop(self, pool: ThreadPoolExecutor) -> None:
        types = sorted(self._handlers)
        while not self._stop.is_set():
            with self._lock:
                while len(self._running) >= self.concurrency and not self._stop.is_set():
                    self._lock.wait(0.5)
                free = self.concurrency - len(self._running)
            if self._stop.is_set():
                return
            try:
                answer = self.client.request(
                    "POST",
                    "/workers/lease",
                    {
                        "worker": self.name,
                        "task_types": types,
                        "labels": self.labels,
                        "max_tasks": min(free, 1000),
                        "wait_secs": self.poll_wait,
                    },
                    wait=self.poll_wait,
                )
            except WrangleError as e:
                if e.status in (400, 401, 403):
                    raise
                log.warning("lease failed, retrying: %s", e)
                self._stop.wait(1.0)
                continue
            for lease in answer["tasks"]:
                ctx = TaskContext(self, lease)
                with self._lock:
                    self._running[ctx.token] = ctx
                if self.heartbeat_interval is None and lease.get("lease_secs"):
                    self.heartbeat_interval = max(0.05, lease["lease_secs"] / 3)
                pool.submit(self._run_one, ctx, lease.get("payload"))

    def _run_one(self, ctx: TaskContext, payload: Any) -> None:
        f = self._handlers.get(ctx.task_type)
        report: Dict[str, Any] = {"task_id": ctx.id, "token": ctx.token}
        try:
            if f is None:
                raise PermanentError(f"no handler for {ctx.task_type!r}")
            result = f(payload, ctx) if self._with_ctx[ctx.task_type] else f(payload)
            report.update(status="completed", result=result)
        except PermanentError as e:
            report.update(status="failed", error=str(e) or type(e).__name__, retryable=False)
        except RetryLater as e:
            report.update(status="failed", error=str(e), retryable=True)
            if e.after is not None:
                report["retry_after_secs"] = e.after
        except Exception as e:  # noqa: BLE001 - any failure of a handler fails its attempt
            report.update(status="failed", error=f"{type(e).__name__}: {e}", retryable=True)
        self._reports.put(report)

    def _report_loop(self) -> None:
        closing = False
        while not closing:
            first = self._reports.get()
            batch: List[Dict[str, Any]] = []
            if first is None:
                closing = True
            else:
                batch.append(first)
            while len(batch) < 1000:
                try:
                    more = self._reports.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                batch.append(more)
            if batch:
                self._send_reports(batch)

    def _send_reports(self, batch: List[Dict[str, Any]]) -> None:
        try:
            # Tokens fence reports: one sent twice is refused the second time, so a lost
            # answer is safe to send again.
            answer = self.client.request(
                "POST", "/workers/reports", {"worker": self.name, "reports": batch}, idempotent=True
            )
            refused = set(answer["refused"])
        except WrangleError as e:
            refused = {r["task_id"] for r in batch}
            if e.status in (404, 409, 410):
                # Unknown worker (dropped after a silence, or a coordinator that took over)
                # or stale leases: their tasks went back to the queue already.
                log.info("reports refused (%d tasks; their leases had ended): %s", len(batch), e)
            else:
                log.warning("reports not sent (%d tasks; their leases will expire): %s", len(batch), e)
        with self._lock:
            for r in batch:
                self._running.pop(r["token"], None)
                if r["task_id"] in refused:
                    self.refused += 1
                elif r["status"] == "completed":
                    self.completed += 1
                else:
                    self.failed += 1
            self._lock.notify_all()
        if refused:
            log.info("%d reports refused: their leases had ended", len(refused))

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval or 5.0):
            with self._lock:
                held = list(self._running.values())
            if not held:
                continue
            body: Dict[str, Any] = {"worker": self.name}
            if len(held) <= 1000:
                # Named, so the coordinator says which are not current (a lease from a
                # coordinator that has since been taken over from).
                body["leases"] = [{"task_id": ctx.id, "token": ctx.token} for ctx in held]
            try:
                beat = self.client.request("POST", "/workers/heartbeat", body, idempotent=True)
            except NotFound:
                # The coordinator does not know this worker (a takeover, or dropped after a
                # silence): every lease held when the heartbeat went is void. Leases taken
                # since come from a coordinator that knows the worker.
                fresh = [ctx for ctx in held if not ctx.cancelled.is_set()]
                if fresh:
                    log.warning("the coordinator does not know this worker: %d attempts stop", len(fresh))
                for ctx in fresh:
                    ctx.cancelled.set()
                continue
            except WrangleError as e:
                log.warning("heartbeat failed: %s", e)
                continue
            refused = set(beat["refused"])
            cancelled = set(beat["cancelled"])
            newest: Dict[str, int] = {}
            count: Dict[str, int] = {}
            for ctx in held:
                newest[ctx.id] = max(newest.get(ctx.id, 0), ctx.attempt)
                count[ctx.id] = count.get(ctx.id, 0) + 1
            for ctx in held:
                # A task held twice (handed out again after a takeover) has one current
                # lease: the newest attempt's.
                stale = ctx.id in refused and (count[ctx.id] == 1 or ctx.attempt < newest[ctx.id])
                if stale or ctx.id in cancelled:
                    ctx.cancelled.set()

    def _progress(self, ctx: TaskContext, fraction: float, message: str) -> None:
        try:
            self.client.request(
                "POST",
                f"/workers/tasks/{ctx.id}/progress",
                {"worker": self.name, "token": ctx.token, "fraction": fraction, "message": message},
            )
        except WrangleError as e:
            log.debug("progress not sent: %s", e)
