"""A Lambda Invoke API server on loopback for the tests: what boto3's `lambda` client (with
`AWS_ENDPOINT_URL_LAMBDA`) calls as `POST /2015-03-31/functions/{FunctionName}/invocations`.

Each function is a Python callable from the event (the JSON payload) to the answer, registered
under the function's name (the name in the ARN boto3 sends):

    server = LambdaServer.start()
    server.register("upper", lambda event: {"records": [...]})
    server.environment()                # AWS_ENDPOINT_URL_LAMBDA for a node
    server.invocations                  # [(function name, event)] in the order they came
    server.stop()

Or the `lambda_server` fixture below (one server per test module). An unregistered function
is answered 404 ResourceNotFoundException, as Lambda answers it.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support import LOOPBACK

Function = Callable[[Any], Any]


def function_name(name_or_arn: str) -> str:
    """`upper`, `arn:aws:lambda:us-east-1:000000000000:function:upper[:qualifier]` -> upper."""
    parts = name_or_arn.split(":")
    return parts[6] if len(parts) >= 7 and parts[5] == "function" else name_or_arn


@dataclass
class LambdaServer:
    server: ThreadingHTTPServer
    thread: threading.Thread
    functions: dict[str, Function] = field(default_factory=dict)
    invocations: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}"

    def environment(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL_LAMBDA": self.url}

    def register(self, name: str, function: Function) -> None:
        self.functions[function_name(name)] = function

    def events(self, name: str) -> list[Any]:
        """The events `name` was invoked with, in order."""
        wanted = function_name(name)
        return [event for called, event in self.invocations if called == wanted]

    @classmethod
    def start(cls) -> LambdaServer:
        holder: list[LambdaServer] = []

        class Invoke(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                # /2015-03-31/functions/{FunctionName}/invocations
                parts = self.path.split("?")[0].split("/")
                name = function_name(urllib.parse.unquote(parts[3])) if len(parts) > 3 else ""
                event = json.loads(self.rfile.read(int(self.headers["Content-Length"] or 0)))
                lambda_server = holder[0]
                lambda_server.invocations.append((name, event))
                function = lambda_server.functions.get(name)
                if function is None:
                    self._answer(
                        404,
                        {"Type": "User", "Message": f"Function not found: {name}"},
                        error="ResourceNotFoundException",
                    )
                    return
                self._answer(200, function(event))

            def _answer(self, status: int, document: Any, *, error: str | None = None) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if error is not None:
                    self.send_header("X-Amzn-ErrorType", error)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((LOOPBACK, 0), Invoke)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        started = cls(server=server, thread=thread)
        holder.append(started)
        thread.start()
        return started

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def lambda_server() -> Iterator[LambdaServer]:
    server = LambdaServer.start()
    try:
        yield server
    finally:
        server.stop()
