"""An HTTP proxy in front of the storage emulator that counts object downloads and can cut them short.

Each request is forwarded to the emulator and its whole answer read; object metadata names the
download URL (``mediaLink``), so the emulator's address in it is replaced by the proxy's and every
download passes through here. ``downloads`` counts the media reads (``alt=media``) of each object.
While ``cut`` is set, a media download is passed on only in part:

* ``"drop"``: the headers promise every byte, the connection closes after half of them;
* ``"short"``: the headers promise half the bytes and deliver them (a server that lies about the object).
"""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import unquote, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "host"}


class EmulatorProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = urlsplit(upstream)
        self.downloads: Counter[str] = Counter()
        self.cut: Literal["drop", "short"] | None = None
        self.cut_downloads = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorProxy

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        upstream = http.client.HTTPConnection(self.server.upstream.hostname, self.server.upstream.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        payload = response.read()
        upstream.close()

        media = "alt=media" in self.path  # .../o/<object name, percent-encoded>?alt=media
        if media:
            name = unquote(urlsplit(self.path).path.rsplit("/o/", 1)[-1])
            with self.server.lock:
                self.server.downloads[name] += 1
        else:
            payload = payload.replace(self.server.upstream.netloc.encode(), self.server.url.split("//")[1].encode())
        cut = self.server.cut if media and len(payload) > 1 else None
        sent = payload[: len(payload) // 2] if cut else payload
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload) if cut == "drop" else len(sent)))
        if cut:
            self.send_header("Connection", "close")
            self.close_connection = True
            with self.server.lock:
                self.server.cut_downloads += 1
        self.end_headers()
        self.wfile.write(sent)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward


@contextlib.contextmanager
def emulator_proxy(upstream: str) -> Iterator[EmulatorProxy]:
    proxy = EmulatorProxy(upstream)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
