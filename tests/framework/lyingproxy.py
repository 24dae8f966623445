"""A full node that lies: a proxy in front of a node's API that lets a test rewrite answers
(JSON with :attr:`LyingProxy.patch`, anything else, such as raw blocks, with
:attr:`LyingProxy.patch_raw`), so a light client's refusals can be shown against a real node."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: (request path, status, JSON answer) -> (status, JSON answer)
Patch = Callable[[str, int, dict[str, Any]], tuple[int, dict[str, Any]]]
#: (request path, answer bytes) -> answer bytes
RawPatch = Callable[[str, bytes], bytes]
FORWARDED = ("Authorization", "Content-Type", "Accept")


def honest(path: str, status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return status, body


def honest_raw(path: str, raw: bytes) -> bytes:
    return raw


class LyingProxy:
    """Forwards GETs and POSTs to the node's API and lets the test rewrite each answer."""

    def __init__(self, upstream: str) -> None:
        self.patch: Patch = honest
        self.patch_raw: RawPatch = honest_raw
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self, data: bytes | None) -> None:
                headers = {k: v for k in FORWARDED if (v := self.headers.get(k)) is not None}
                request = urllib.request.Request(upstream + self.path, data, headers,
                                                 method=self.command)
                try:
                    with urllib.request.urlopen(request, timeout=30) as resp:
                        status, raw, ctype = resp.status, resp.read(), resp.headers.get_content_type()
                except urllib.error.HTTPError as err:
                    status, raw, ctype = err.code, err.read(), err.headers.get_content_type()
                if ctype == "application/json":
                    status, body = proxy.patch(self.path, status, json.loads(raw))
                    raw = json.dumps(body).encode()
                else:
                    raw = proxy.patch_raw(self.path, raw)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                with contextlib.suppress(ConnectionError):  # a client that stopped waiting
                    self.wfile.write(raw)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self._forward(None)

            def do_POST(self) -> None:  # noqa: N802
                self._forward(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def honest(self) -> None:
        self.patch, self.patch_raw = honest, honest_raw

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
