"""The node's HTTP API from the client's side: one aiohttp client for the command line, the
storage agents, the scripts and the tests, and how a client finds the node of a data directory.

:class:`AsyncApiClient` is the client; :class:`ApiClient` is the same client for synchronous
callers (the command line, scripts), run on one event-loop thread per process, so that retries,
timeouts and error decoding exist once. A node announces where it serves in
``<datadir>/node.json`` and its token in ``<datadir>/api.cookie`` (mode 0600); the token is
sent only to an API on the loopback interface unless ``BLOCKCOIN_API_REMOTE=1``, so a
``node.json`` pointing elsewhere cannot collect it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp

from chain.core.errors import BlockcoinError

NODE_FILE = "node.json"
COOKIE_NAME = "api.cookie"
REMOTE_ENV = "BLOCKCOIN_API_REMOTE"

T = TypeVar("T")


class ApiError(BlockcoinError):
    """The node answered with an error: its HTTP status, error code and message."""

    code = "api"

    def __init__(self, status: int, code: str, message: str, body: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.body = body  # the whole error document (a 404 with ?proof=1 carries the proof)


class NodeNotRunning(BlockcoinError):
    """No node answers where one was expected."""

    code = "node-not-running"


class RemoteApiRefused(BlockcoinError):
    """``node.json`` names an API off the loopback interface: the token stays here."""

    code = "remote-api"


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1), in any case, brackets allowed."""
    host = host.strip().lower().removeprefix("[").removesuffix("]")
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def node_file(datadir: Path) -> Path:
    return datadir / NODE_FILE


def cookie_path(datadir: Path) -> Path:
    return datadir / COOKIE_NAME


def read_cookie(datadir: Path) -> str | None:
    try:
        return cookie_path(datadir).read_text().strip() or None
    except OSError:
        return None


def locate_node(datadir: Path) -> tuple[str, str | None]:
    """The API address and token of the node running on ``datadir``."""
    try:
        url = str(json.loads(node_file(datadir).read_text())["api"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NodeNotRunning(
            f"no node is running on {datadir} (it has no readable {NODE_FILE}); start one "
            "with `blockcoin node`") from exc
    host = urlsplit(url).hostname or ""
    if not is_loopback(host) and os.environ.get(REMOTE_ENV) != "1":
        raise RemoteApiRefused(
            f"{node_file(datadir)} names the API at {host}, not on this machine's loopback: "
            f"the API token is not sent there (set {REMOTE_ENV}=1 to allow it)")
    return url, read_cookie(datadir)


def _error_of(status: int, body: bytes) -> ApiError:
    try:
        err = json.loads(body)
        return ApiError(status, str(err.get("error", "error")), str(err.get("message", "")), err)
    except (ValueError, AttributeError):
        return ApiError(status, "http", body[:200].decode(errors="replace"))


class AsyncApiClient:
    """A node's API over one aiohttp session (keep-alive connections, one timeout per request)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"an API address is http://host:port, got {base_url!r}")
        self.base = base_url.rstrip("/")
        self.host = parts.hostname
        self.token = token
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def request(self, method: str, path: str, body: Any = None, *, data: bytes | None = None,
                      auth: bool = False, raw: bool = False) -> Any:
        """The answer to ``method path``: parsed JSON, or the bytes of any other content type
        (always the bytes with ``raw``). ``body`` is sent as JSON, ``data`` as octet-stream.
        :class:`ApiError` for an error answer, :class:`NodeNotRunning` when nothing answers."""
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            headers["Content-Type"] = "application/octet-stream"
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in (0, 1):  # a kept-alive connection the node closed meanwhile: once more
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.timeout))
            try:
                async with self._session.request(method, self.base + path, data=data,
                                                 headers=headers) as resp:
                    content = await resp.read()
                    status, ctype = resp.status, resp.content_type
                break
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                if attempt or isinstance(exc, TimeoutError):
                    raise NodeNotRunning(f"cannot reach the node's API at {self.base}: "
                                         f"{type(exc).__name__} {exc}".rstrip()) from exc
        if status >= 400:
            raise _error_of(status, content)
        if not raw and ctype == "application/json":
            return json.loads(content)
        return content

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _ClientLoop:
    """The event loop the synchronous clients of this process run on, in a daemon thread
    (started again in a forked child, which does not inherit the thread)."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None
    _pid = 0

    @classmethod
    def run(cls, coro: Coroutine[Any, Any, T]) -> T:
        with cls._lock:
            if cls._loop is None or cls._pid != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="api-client",
                                 daemon=True).start()
                cls._loop, cls._pid = loop, os.getpid()
            loop = cls._loop
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise


class ApiClient:
    """:class:`AsyncApiClient` for synchronous callers: the command line and scripts."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0) -> None:
        self._client = AsyncApiClient(base_url, token, timeout)

    @classmethod
    def for_datadir(cls, datadir: Path) -> ApiClient:
        """The client of the node running on ``datadir`` (from its node.json and cookie)."""
        url, token = locate_node(datadir)
        return cls(url, token)

    @property
    def host(self) -> str:
        return self._client.host

    @property
    def aio(self) -> AsyncApiClient:
        """The async client under this one, for a coroutine run through :meth:`call`."""
        return self._client

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` (an async helper over :attr:`aio`, one the agents share) on this
        process's client loop."""
        return _ClientLoop.run(coro)

    @property
    def token(self) -> str | None:
        return self._client.token

    @token.setter
    def token(self, value: str | None) -> None:
        self._client.token = value

    def request(self, method: str, path: str, body: Any = None, auth: bool = False) -> Any:
        return _ClientLoop.run(self._client.request(method, path, body, auth=auth))

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body, auth=True)

    def principal(self, principal: str) -> Any:
        return self.get(f"/global/principals/{quote(principal)}")

    def fragments(self, path: str) -> Any:
        return self.get("/global/fragments/" + quote(path.lstrip("/")))

    def close(self) -> None:
        if self._client._session is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone at interpreter exit
                _ClientLoop.run(self._client.close())

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
