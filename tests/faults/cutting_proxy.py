"""An HTTP proxy in front of the storage emulator that can cut object downloads short.

Each request is forwarded to the emulator and its whole answer read (with the emulator's address in it
replaced by the proxy's, so download links lead back here); a media download (``alt=media``) is then
passed on whole, or, while ``cut`` is set, only its first half:

* ``"drop"``: the headers promise every byte, the connection closes after half of them;
* ``"short"``: the headers promise half the bytes and deliver them (a server that lies about the object).
"""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


class CuttingProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = urlsplit(upstream)
        self.cut: str | None = None
        self.cut_downloads = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CuttingProxy

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        upstream = http.client.HTTPConnection(self.server.upstream.hostname, self.server.upstream.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}}
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        payload = response.read()
        upstream.close()

        media = "alt=media" in self.path
        if not media:  # object metadata names the download URL (mediaLink): make it point here too
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
            self.server.cut_downloads += 1
        self.end_headers()
        self.wfile.write(sent)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


@contextlib.contextmanager
def cutting_proxy(upstream: str) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(upstream)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
