"""A real S3-compatible server on 127.0.0.1 for the tests: moto's, with every request logged.

The server runs moto's Flask/werkzeug app in a thread on a free port, behind a
small WSGI middleware that logs each request (method, object key, ``Range``
header, body bytes sent), so tests count what a read costs at the server.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import moto.server as moto_server
import werkzeug.serving as werkzeug_serving


@dataclass
class RequestLog:
    """What the server was asked for and what it sent (thread-safe)."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.entries.append(entry)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()

    def gets(self, key: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.entries if e["method"] == "GET" and e["key"] == key]

    def bytes_sent(self, key: str) -> int:
        return sum(e["bytes"] for e in self.gets(key))


class _Counting:
    """WSGI middleware: log each request and count the body bytes sent back."""

    def __init__(self, app: Callable[..., Iterable[bytes]], log: RequestLog) -> None:
        self.app = app
        self.log = log

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterator[bytes]:
        path = environ.get("PATH_INFO", "")
        entry = {
            "method": environ["REQUEST_METHOD"],
            "key": path.split("/", 2)[2] if path.count("/") >= 2 else "",
            "range": environ.get("HTTP_RANGE"),
            "bytes": 0,
        }
        self.log.add(entry)
        for chunk in self.app(environ, start_response):
            entry["bytes"] += len(chunk)
            yield chunk


class _QuietHandler(werkzeug_serving.WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        """No access log on stderr (the middleware keeps its own)."""


class _Server(moto_server.ThreadedMotoServer):
    """moto's threaded server with the counting middleware in front."""

    def __init__(self, log: RequestLog) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.log = log

    def _server_entry(self) -> None:
        app = moto_server.DomainDispatcherApplication(moto_server.create_backend_app)
        self._server = werkzeug_serving.make_server(
            self._ip_address,
            self._port,
            _Counting(app, self.log),
            threaded=True,
            request_handler=_QuietHandler,
        )
        self._server_ready_event.set()
        self._server.serve_forever()


@dataclass
class S3Endpoint:
    """A running server: its URL, request log, a boto3 client and s3fs ``storage_options``."""

    url: str
    log: RequestLog
    client: Any
    options: dict[str, Any]


@contextlib.contextmanager
def s3_endpoint(*buckets: str) -> Iterator[S3Endpoint]:
    """Start a counting moto server with ``buckets`` created; stop it on exit."""
    log = RequestLog()
    server = _Server(log)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    for bucket in buckets:
        client.create_bucket(Bucket=bucket)
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": url, "region_name": "us-east-1"},
    }
    try:
        yield S3Endpoint(url, log, client, options)
    finally:
        server.stop()
