"""Measures the Python client end to end against a running coordinator and prints figures.

    python clients/python/bench.py --url http://127.0.0.1:7700 --token T [--tasks 20000]

1. Submit N no-op tasks (`echo`, run by the coordinator's own workers) and wait for all of
   them from this process: submit_many + as_completed (two calls per 10,000), then
   run_many (one call per 10,000).
2. A Python worker runs N no-op tasks of its own type (`py.noop`) through the HTTP
   worker protocol: tasks per second from the first submit to the last result.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "src"))

from wrangle_client import Client, Worker  # noqa: E402


def rate(n: int, secs: float) -> str:
    return f"{n:,} tasks in {secs:.3f} s = {n / secs:,.0f} tasks/s"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="http://127.0.0.1:7700")
    p.add_argument("--token", default=os.environ.get("WRANGLE_TOKEN"))
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    n = a.tasks
    c = Client(a.url, a.token, timeout=120)
    payloads = [{"task_type": "echo", "payload": i} for i in range(n)]
    c.run_many(payloads[:100])  # warm up connections

    for r in range(a.rounds):
        t0 = time.perf_counter()
        ids = c.submit_many(payloads)
        got = sum(1 for res in c.as_completed(ids, timeout=300) if res.ok)
        secs = time.perf_counter() - t0
        assert got == n, got
        print(f"round {r + 1}: submit_many + as_completed: {rate(n, secs)}")
        t0 = time.perf_counter()
        results = c.run_many(payloads, timeout=300)
        secs = time.perf_counter() - t0
        assert len(results) == n and all(x.ok for x in results)
        print(f"round {r + 1}: run_many:                   {rate(n, secs)}")

    w = Worker(Client(a.url, a.token, timeout=120), "bench", {"py.noop": lambda x: x},
               concurrency=a.concurrency, poll_wait=1.0)
    thread = w.start()
    time.sleep(0.5)  # its first lease declares py.noop
    for r in range(a.rounds):
        t0 = time.perf_counter()
        ids = c.submit_many([{"task_type": "py.noop", "payload": i} for i in range(n)])
        got = sum(1 for res in c.as_completed(ids, timeout=300) if res.ok)
        secs = time.perf_counter() - t0
        assert got == n, got
        print(f"round {r + 1}: Python worker (concurrency {a.concurrency}): {rate(n, secs)}")
    w.stop()
    thread.join()


if __name__ == "__main__":
    main()
