"""Following the leading coordinator.

Several coordinators can share one PostgreSQL database: one leads, the others stand by. A
standby answers every API route with ``307 Temporary Redirect`` to the leader, or with
``503`` and ``{"error": "no_leader"}`` while a takeover is under way. httpx drops the
``Authorization`` header when it follows a redirect to another origin (another port is
one), so redirects are followed here, by hand: the same method, body and token, at most
:data:`MAX_HOPS` hops, to ``http`` and ``https`` only. The leader found is remembered, so
later calls go straight to it. When the coordinator in use cannot be reached or knows no
leader yet, the others given are tried in turn, pausing between rounds, until the
failover time runs out.

A redirect or a ``no_leader`` answer means the request was not acted on, so sending it
again is always safe. A request whose answer was lost after it was sent may have been
acted on: it is sent again only when the caller says so (``resend=True``).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, List, Mapping, Optional, Sequence, Union

import httpx

from ._errors import ConnectionLost as Lost
from ._errors import Unavailable, WrangleError

#: The most redirects one call follows.
MAX_HOPS = 3

#: The first pause after a round of coordinators that all failed (it doubles up to
#: ``_MAX_PAUSE``), and the longest, whatever a ``Retry-After`` says.
_FIRST_PAUSE = 0.1
_MAX_PAUSE = 2.0


class _Unreached(Exception):
    """Nothing was sent: no connection could be opened."""


def parse_urls(url: Union[str, Sequence[str]]) -> List[str]:
    """The coordinators' base URLs, checked (``http`` or ``https``) and without a trailing
    ``/``. A string may name several, comma-separated."""
    given = url.split(",") if isinstance(url, str) else list(url)
    urls: List[str] = []
    for u in given:
        u = u.strip()
        if not u:
            continue
        parsed = httpx.URL(u)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"url: {u!r} is not an http or https URL")
        base = u.rstrip("/")
        if base not in urls:
            urls.append(base)
    if not urls:
        raise ValueError("url: no coordinator given")
    return urls


class Coordinators:
    """The coordinators a client was given, and the one its calls go to (thread-safe)."""

    def __init__(self, urls: List[str], failover_timeout: float) -> None:
        self.urls = urls
        self.failover_timeout = failover_timeout
        self._lock = threading.Lock()
        # A leader that is none of ``urls`` (a standby named it), else ``urls[_index]``.
        self._leader: Optional[str] = None
        self._index = 0

    @property
    def current(self) -> str:
        """Where calls go now: the leader once a standby named it."""
        with self._lock:
            return self._leader or self.urls[self._index]

    def send(
        self,
        http: httpx.Client,
        method: str,
        path: str,
        *,
        content: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        params: Optional[Mapping[str, Any]] = None,
        timeout: Optional[httpx.Timeout] = None,
        stream: bool = False,
        resend: bool = False,
    ) -> httpx.Response:
        """Makes the call on the leader; its answer (open when ``stream``: close it).
        Any answer but a redirect or ``no_leader`` is returned, an error status included.

        :class:`Lost` when the answer was lost and ``resend`` is false; :class:`Unavailable`
        (``no_leader``) or :class:`WrangleError` (status 0) when no coordinator led within
        the failover time; :class:`WrangleError` (``redirect``) for a redirect that must
        not be followed."""
        deadline = time.monotonic() + self.failover_timeout
        pause = _FIRST_PAUSE
        misses = 0
        while True:
            base = self.current
            retry_after: Optional[float] = None
            no_leader = False
            try:
                res = self._attempt(http, base, method, path, content, headers, params, timeout, stream)
            except _Unreached as e:
                why = str(e)
            except Lost as e:
                if not resend:
                    # The next call starts at another coordinator (this one may be dead).
                    self.failed(base)
                    raise Lost(
                        f"{e.message}; the request had been sent and may have been acted on, "
                        "so it is not sent again"
                    ) from e.__cause__
                why = e.message
            else:
                if res.status_code == 503 and _is_no_leader(res):
                    no_leader = True
                    why = f"{res.request.url} knows no leader yet"
                    retry_after = _seconds(res.headers.get("retry-after"))
                    res.close()
                else:
                    self._found(base_of(res.request.url, path))
                    return res
            self.failed(base)
            misses += 1
            now = time.monotonic()
            if now >= deadline:
                message = (
                    f"no leading coordinator answered within {self.failover_timeout:g} s "
                    f"(tried {', '.join(self.urls)}): {why}"
                )
                if no_leader:
                    raise Unavailable(message, status=503, code="no_leader")
                raise WrangleError(message)
            # Every coordinator failed once since the last pause: wait before the next round.
            if misses % len(self.urls) == 0:
                wait = pause if retry_after is None else retry_after
                time.sleep(max(0.0, min(wait, _MAX_PAUSE, deadline - now)))
                pause = min(pause * 2, _MAX_PAUSE)

    def _attempt(
        self,
        http: httpx.Client,
        base: str,
        method: str,
        path: str,
        content: Optional[str],
        headers: Optional[Mapping[str, str]],
        params: Optional[Mapping[str, Any]],
        timeout: Optional[httpx.Timeout],
        stream: bool,
    ) -> httpx.Response:
        """One attempt, starting at ``base`` and following up to :data:`MAX_HOPS`
        redirects."""
        extra: Any = {} if timeout is None else {"timeout": timeout}
        request = http.build_request(method, base + path, content=content, headers=headers, params=params, **extra)
        chain = [str(request.url)]
        for hop in range(MAX_HOPS + 1):
            try:
                res = http.send(request, stream=stream, follow_redirects=False)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
                raise _Unreached(f"cannot reach {request.url}: {e}") from e
            except httpx.TransportError as e:
                raise Lost(f"lost {request.url}: {type(e).__name__}: {e}") from e
            if res.status_code not in (307, 308):
                return res
            location = res.headers.get("location")
            res.close()
            if not location:
                raise WrangleError(f"{request.url} redirected without a Location", status=res.status_code, code="redirect")
            try:
                target = request.url.join(location)
            except httpx.InvalidURL as e:
                raise WrangleError(f"{request.url} redirected to {location!r}, not a URL: {e}", code="redirect") from e
            if target.scheme not in ("http", "https"):
                raise WrangleError(
                    f"{request.url} redirected to {location!r}, which is not an http or https URL",
                    status=res.status_code,
                    code="redirect",
                )
            chain.append(str(target))
            if hop == MAX_HOPS:
                raise WrangleError(
                    f"more than {MAX_HOPS} redirects: {' -> '.join(chain)}", status=res.status_code, code="redirect"
                )
            request = http.build_request(method, target, content=content, headers=headers, **extra)
        raise AssertionError("the last hop returns")

    def _found(self, leader: str) -> None:
        with self._lock:
            if leader in self.urls:
                self._leader, self._index = None, self.urls.index(leader)
            else:
                self._leader = leader

    def failed(self, base: str) -> None:
        """``base`` failed: calls go to the next coordinator (unless another call moved on
        already)."""
        with self._lock:
            if self._leader == base:
                self._leader = None
            elif self._leader is None and self.urls[self._index] == base:
                self._index = (self._index + 1) % len(self.urls)


def _is_no_leader(res: httpx.Response) -> bool:
    """A standby's "no leader yet": ``{"error": "no_leader"}`` (or the API's nested form)."""
    try:
        body = json.loads(res.read() or b"null")
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    error = body.get("error")
    return error == "no_leader" or (isinstance(error, dict) and error.get("code") == "no_leader")


def _seconds(value: Optional[str]) -> Optional[float]:
    try:
        secs = float(value) if value is not None else None
    except ValueError:
        return None
    return secs if secs is not None and secs >= 0 else None


def base_of(url: httpx.URL, path: str) -> str:
    """The base URL of the coordinator that answered ``url``: ``url`` without the path the
    call asked for (its origin, when a redirect changed the path)."""
    origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
    if url.path.endswith(path):
        return (origin + url.path[: len(url.path) - len(path)]).rstrip("/")
    return origin
