"""Starts the real coordinator program (``WRANGLE_COORDINATOR_BIN``, built by cargo) on a
free loopback port for the tests, with a token, a read-only token and the memory store."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from typing import Iterator

import httpx
import pytest

from wrangle_client import Client

TOKEN = "py-t0ken-for-tests"
READ_TOKEN = "py-read-0nly"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Coordinator:
    def __init__(self, url: str, proc: "subprocess.Popen[bytes]") -> None:
        self.url = url
        self.proc = proc

    def client(self, token: str = TOKEN, **kw: object) -> Client:
        return Client(self.url, token, **kw)  # type: ignore[arg-type]

    def stop(self) -> None:
        """Stops it gracefully (SIGTERM), killing it if it lingers."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """Kills it at once (SIGKILL), as a crash would."""
        self.proc.kill()
        self.proc.wait()


def launch(extra: "dict[str, str]") -> Coordinator:
    """Starts the coordinator program with the test settings and ``extra`` on a free
    port; returns once it answers ``/healthz``."""
    binary = os.environ.get("WRANGLE_COORDINATOR_BIN")
    if not binary:
        pytest.fail("WRANGLE_COORDINATOR_BIN must name the coordinator program (cargo build --example coordinator)")
    port = _free_port()
    env = dict(os.environ)
    env.update(
        WRANGLE_DATABASE_URL="memory",
        WRANGLE_TOKEN=TOKEN,
        WRANGLE_TOKENS=f"read={READ_TOKEN}",
        WRANGLE_MIN_WORKERS="2",
        WRANGLE_MAX_WORKERS="2",
        WRANGLE_MAX_CONCURRENT_TASKS="64",
        WRANGLE_LEASE_TIME_SECS="2",
        RUST_LOG=os.environ.get("RUST_LOG", "warn"),
    )
    env.update(extra)
    proc = subprocess.Popen([binary, "--bind", f"127.0.0.1:{port}"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"the coordinator exited with {proc.returncode}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the coordinator did not answer /healthz within 60 s")
        time.sleep(0.05)
    return Coordinator(url, proc)


def _start(extra: "dict[str, str]") -> Iterator[Coordinator]:
    c = launch(extra)
    yield c
    c.stop()


@pytest.fixture(scope="session")
def coordinator() -> Iterator[Coordinator]:
    yield from _start({})


@pytest.fixture(scope="module")
def small_queue() -> Iterator[Coordinator]:
    """A coordinator whose queue holds one waiting task."""
    yield from _start({"WRANGLE_MAX_QUEUE_SIZE": "1"})


@pytest.fixture
def client(coordinator: Coordinator) -> Iterator[Client]:
    with coordinator.client() as c:
        yield c
