"""A small synchronous client of a running node's API (what the command line uses when the data
directory is held by a node). One keep-alive HTTP connection; errors come back as
:class:`ApiError` carrying the node's error code and message."""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from chain.api.auth import REMOTE_ENV, is_loopback, read_cookie
from chain.core.errors import BlockcoinError

NODE_FILE = "node.json"


class ApiError(BlockcoinError):
    code = "api"

    def __init__(self, status: int, code: str, message: str, body: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.body = body  # the whole error document (a 404 with ?proof=1 carries the proof)


class NodeNotRunning(BlockcoinError):
    code = "node-not-running"


class RemoteApiRefused(BlockcoinError):
    """``node.json`` names an API off the loopback interface: the token stays here."""

    code = "remote-api"


def node_file(datadir: Path) -> Path:
    return datadir / NODE_FILE


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"an API address is http://host:port, got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.token = token
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    @classmethod
    def for_datadir(cls, datadir: Path) -> ApiClient:
        """The client of the node running on ``datadir`` (from its node.json and cookie)."""
        try:
            info = json.loads(node_file(datadir).read_text())
            url = info["api"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NodeNotRunning(
                f"no node is running on {datadir} (it has no readable {NODE_FILE}); start one "
                "with `blockcoin node`") from exc
        client = cls(url)
        if not is_loopback(client.host) and os.environ.get(REMOTE_ENV) != "1":
            raise RemoteApiRefused(
                f"{node_file(datadir)} names the API at {client.host}, not on this machine's "
                f"loopback: the API token is not sent there (set {REMOTE_ENV}=1 to allow it)")
        client.token = read_cookie(datadir)
        return client

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None, auth: bool = False) -> Any:
        headers = {"Accept": "application/json"}
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=data, headers=headers)
                response = self._conn.getresponse()
                raw = response.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                self.close()
                if attempt:
                    raise NodeNotRunning(
                        f"cannot reach the node's API at {self.host}:{self.port}: {exc}") from exc
        ctype = response.getheader("Content-Type", "")
        if response.status >= 400:
            try:
                err = json.loads(raw)
                raise ApiError(response.status, str(err.get("error", "error")),
                               str(err.get("message", "")), err)
            except (ValueError, AttributeError):
                raise ApiError(response.status, "http", raw[:200].decode(errors="replace")) from None
        if ctype.startswith("application/json"):
            return json.loads(raw)
        return raw

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body, auth=True)

    # --- conveniences ------------------------------------------------------------------

    def principal(self, principal: str) -> Any:
        return self.get(f"/global/principals/{quote(principal)}")

    def fragments(self, path: str) -> Any:
        return self.get("/global/fragments/" + quote(path.lstrip("/")))
