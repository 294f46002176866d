"""A scriptable OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

Stdlib only (``http.server``). By default it answers every ``/v1/chat/completions`` request with
JSON that satisfies the request's ``response_format`` JSON schema; tests queue :class:`Reply`
objects to inject faults (HTTP status codes, ``Retry-After``, delays that trip the client's
timeout, dropped connections, malformed or wrong answers). Every request body is recorded, so a
test can assert the exact payload the client sent.

It is a place to grow a fault injector: add fields to :class:`Reply`, keep the default valid.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted response. ``content=None`` means: a valid answer built from the request's schema."""

    status: int = 200
    content: str | None = None
    error: str = "injected failure"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop_connection: bool = False
    prompt_tokens: int = 100
    completion_tokens: int = 50
    # Fault injection (kbgen.testing.faults): a refusal message instead of content, the finish
    # reason of a cut-off answer ("length"), and a TCP reset (RST) instead of a clean close.
    refusal: str | None = None
    finish_reason: str = "stop"
    reset_connection: bool = False


def answer_from_schema(schema: dict[str, Any], text: str = "It moves steadily during the action.") -> Any:
    """A value that satisfies a (simple) JSON schema: objects, arrays, enums and strings."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        return {name: answer_from_schema(sub, text) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [answer_from_schema(schema.get("items", {}), text)] * max(1, schema.get("minItems", 1))
    if kind in ("number", "integer"):
        return 0
    if kind == "boolean":
        return True
    return text


def schema_of(request: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a chat request asked for through ``response_format``, if any."""
    fmt = request.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema")
    return None


class FakeOpenAIServer:
    """Context manager running the fake server in a background thread.

    Args:
        delay_s: delay before every default (unscripted) answer, e.g. 0.5 s for throughput benchmarks.
        responder: builds the default reply for a request; defaults to a valid schema-filling answer.
        port: TCP port on 127.0.0.1; 0 picks a free one.
    """

    def __init__(
        self,
        delay_s: float = 0.0,
        responder: Callable[[dict[str, Any]], Reply] | None = None,
        port: int = 0,
    ) -> None:
        self.delay_s = delay_s
        self.port = port
        self.responder = responder or self._valid_reply
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def enqueue(self, *replies: Reply) -> None:
        """Replies used, in order, for the next requests before falling back to the default."""
        with self._lock:
            self._script.extend(replies)

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "start the server first (use it as a context manager)"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _valid_reply(self, request: dict[str, Any]) -> Reply:
        schema = schema_of(request)
        content = json.dumps(answer_from_schema(schema)) if schema else "{}"
        return Reply(content=content, delay_s=self.delay_s)

    def _next_reply(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._script:
                return self._script.popleft()
        return self.responder(request)

    def __enter__(self) -> FakeOpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test and benchmark output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.request_headers.append(dict(self.headers))
                reply = server._next_reply(body)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.drop_connection or reply.reset_connection:
                    self.close_connection = True
                    if reply.reset_connection:
                        # SO_LINGER on, timeout 0: close() sends RST, the client sees "connection reset".
                        self.connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    self.connection.close()
                    return
                if reply.status != 200:
                    payload = {"error": {"message": reply.error, "type": "fake", "code": reply.status}}
                else:
                    content = reply.content
                    if content is None:
                        schema = schema_of(body)
                        content = json.dumps(answer_from_schema(schema)) if schema else "{}"
                    payload = {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "fake"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {
                                    "role": "assistant",
                                    "content": None if reply.refusal is not None else content,
                                    **({"refusal": reply.refusal} if reply.refusal is not None else {}),
                                },
                                "finish_reason": reply.finish_reason,
                            }
                        ],
                        "usage": {
                            "prompt_tokens": reply.prompt_tokens,
                            "completion_tokens": reply.completion_tokens,
                            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                        },
                    }
                data = json.dumps(payload).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                # The client may have given up already (timeout tests).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
