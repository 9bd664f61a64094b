"""The HTTP server: routes each request to its API family and answers with the scenario's next turn.

Routes (anything else is a logged 404 with a JSON body that lists these):

    HEAD/GET /                                   probe (Claude Code sends ``HEAD /`` first)
    POST /v1/messages[?beta=true]                Anthropic Messages (stream or not)
    POST /v1/messages/count_tokens               Anthropic token count
    POST /v1/responses                           OpenAI Responses (Codex); also /responses
    POST /v1beta/models/{model}:generateContent  Gemini; also :streamGenerateContent?alt=sse, :countTokens
    GET  /_scenario/requests | /_scenario/state  the request log, the scripts' positions (for tests)
    POST /_scenario/reset                        every script back to its first turn, log cleared

``ModelServer`` is a context manager; ``start()`` serves in a background thread, ``close()`` also
releases hanging requests. Streams are sent with chunked encoding so a ``cut = "eof"`` turn can end
the body cleanly and ``cut = "abort"`` can drop the socket without the terminating chunk.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import signal
import socket
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, ModuleType, TracebackType
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from orchestrator.modelserver import wire_anthropic, wire_gemini, wire_openai
from orchestrator.modelserver.incoming import Family, Incoming
from orchestrator.modelserver.requestlog import RequestLog
from orchestrator.modelserver.scenario import ErrorReply, Scenario
from orchestrator.modelserver.state import ScenarioState, answer_for
from orchestrator.modelserver.wire import Reply

WIRES: dict[str, ModuleType] = {"anthropic": wire_anthropic, "openai": wire_openai, "gemini": wire_gemini}
_GEMINI = re.compile(
    r"^/v1(?:beta|alpha)?/models/([^/:]+):(generateContent|streamGenerateContent|countTokens)$"
)
ROUTES = (
    "HEAD /",
    "POST /v1/messages",
    "POST /v1/messages/count_tokens",
    "POST /v1/responses",
    "POST /v1beta/models/{model}:generateContent",
    "POST /v1beta/models/{model}:streamGenerateContent?alt=sse",
    "GET /_scenario/requests",
    "GET /_scenario/state",
    "POST /_scenario/reset",
)


class ModelServer:
    """A scripted model API on ``host:port`` (port 0 picks a free one; see ``url``)."""

    def __init__(
        self,
        scenario: Scenario,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: Path | None = None,
        echo: TextIO | None = None,
    ) -> None:
        self.scenario = scenario
        self.state = ScenarioState(scenario)
        self.log = RequestLog(log_path, echo)
        self.stopping = threading.Event()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.app = self
        self._thread: threading.Thread | None = None
        self._serving = False

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._httpd.server_address[0])
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"  # noqa: S104

    def start(self) -> ModelServer:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="modelserver", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._serving = True
        self.log.note("modelserver.listening", url=self.url, scenario=self.scenario.source)
        self._httpd.serve_forever(poll_interval=0.1)

    def close(self) -> None:
        """Stop serving, release hanging requests, close the socket and the log file."""
        self.stopping.set()
        if self._serving:  # shutdown() waits for serve_forever, which would never come
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.log.close()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: ModelServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "modelserver"
    _started = False

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: every request is logged once, as JSON, by ``RequestLog``."""

    @property
    def app(self) -> ModelServer:
        return self.server.app

    def do_HEAD(self) -> None:
        self._guard(self._route)

    def do_GET(self) -> None:
        self._guard(self._route)

    def do_POST(self) -> None:
        self._guard(self._route)

    def do_PUT(self) -> None:
        self._guard(self._route)

    def do_DELETE(self) -> None:
        self._guard(self._route)

    def _guard(self, action: Any) -> None:
        try:
            action()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # noqa: BLE001 - a bug here must be answered and logged, not kill the thread
            trace = traceback.format_exc()
            self.app.log.note("modelserver.handler_failed", path=self.path, error=repr(err), trace=trace)
            self.close_connection = True
            if not self._started:
                body = {"error": {"type": "modelserver_bug", "message": f"modelserver failed: {err!r}"}}
                self._send(Reply.json(500, body))

    def _route(self) -> None:
        self._started = False
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        body = self._read_body()
        method = self.command
        base = {"method": method, "path": path}
        if path == "/" and method in ("HEAD", "GET"):
            info = {"server": "modelserver", "scenario": self.app.scenario.source}
            self._record({**base, "family": None, "answer": "probe", "status": 200}, body)
            self._send(Reply.json(200, info))
            return
        if path.startswith("/_scenario/"):
            self._control(path, method, base, body)
            return
        if method == "POST" and path == "/v1/messages":
            self._model("anthropic", "", None, base, body)
        elif method == "POST" and path == "/v1/messages/count_tokens":
            self._count("anthropic", base, body)
        elif method == "POST" and path in ("/v1/responses", "/responses"):
            self._model("openai", "", None, base, body)
        elif method == "POST" and (found := _GEMINI.match(path)):
            model, action = found.groups()
            if action == "countTokens":
                self._count("gemini", base, body)
            else:
                stream = action == "streamGenerateContent"
                if stream and query.get("alt") != ["sse"]:
                    problem = f"modelserver serves {path} only as SSE: add ?alt=sse"
                    self._reply_error("gemini", 400, problem, base, body, "bad_request", None)
                    return
                self._model("gemini", model, stream, base, body)
        else:
            message = f"modelserver: no route for {method} {path}; known routes: {', '.join(ROUTES)}"
            self._record({**base, "family": None, "answer": "not_found", "status": 404}, body)
            self._send(Reply.json(404, {"error": {"type": "not_found", "message": message}}))

    def _control(self, path: str, method: str, base: dict[str, Any], body: bytes) -> None:
        app = self.app
        if method == "GET" and path == "/_scenario/requests":
            entries = app.log.entries()
            self._send(Reply.json(200, {"count": len(entries), "requests": entries}))
        elif method == "GET" and path == "/_scenario/state":
            self._send(Reply.json(200, {**app.state.snapshot(), "requests": len(app.log.entries())}))
        elif method == "POST" and path == "/_scenario/reset":
            app.state.reset()
            app.log.clear()
            self._send(Reply.json(200, app.state.snapshot()))
        else:
            message = f"modelserver: no route for {method} {path}; known routes: {', '.join(ROUTES)}"
            self._record({**base, "family": None, "answer": "not_found", "status": 404}, body)
            self._send(Reply.json(404, {"error": {"type": "not_found", "message": message}}))

    def _parse(self, family: Family, base: dict[str, Any], body: bytes) -> dict[str, Any] | None:
        try:
            value = json.loads(body)
        except ValueError as err:
            problem = f"modelserver: the request body is not JSON ({err}); send the API's JSON request"
            self._reply_error(family, 400, problem, base, body, "bad_body", None)
            return None
        if not isinstance(value, dict):
            problem = f"modelserver: the request body must be a JSON object, got {type(value).__name__}"
            self._reply_error(family, 400, problem, base, body, "bad_body", None)
            return None
        return value

    def _count(self, family: Family, base: dict[str, Any], body: bytes) -> None:
        parsed = self._parse(family, base, body)
        if parsed is None:
            return
        self._record({**base, "family": family, "answer": "count_tokens", "status": 200}, body)
        tokens = max(1, len(body) // 4)
        if family == "anthropic":
            self._send(wire_anthropic.count_tokens(parsed))
        else:
            self._send(Reply.json(200, {"totalTokens": tokens}))

    def _model(
        self, family: Family, model: str, stream: bool | None, base: dict[str, Any], body: bytes
    ) -> None:
        parsed = self._parse(family, base, body)
        if parsed is None:
            return
        request = Incoming.of(family, model, parsed, stream)
        entry = {**base, "family": family, "model": request.model, "stream": request.stream}
        if request.tool_result is not None:
            entry["tool_result"] = request.tool_result
        if request.tool_error is not None:
            entry["tool_error"] = request.tool_error
        app = self.app
        if family == "gemini" and request.side and not request.stream and app.scenario.auto_side_requests:
            self._record({**entry, "answer": "side", "status": 200}, body)
            self._send(wire_gemini.side(request))
            return
        pick = app.state.pick(request)
        if pick is None:
            problem = (
                f"modelserver: no scenario turn left for this {request.agent} request "
                f"(scenario {app.scenario.source}); GET /_scenario/state shows every script's position"
            )
            self._reply_error(family, 400, problem, entry, body, "no_turn", request)
            return
        turn = pick.turn
        used = {"script": pick.script.name, "turn": turn.number, "attempt": pick.attempt, "answer": turn.kind}
        if pick.retry:
            used["retry"] = pick.retry
        if pick.unanswered:
            used["unanswered"] = True
        if turn.delay:
            app.stopping.wait(turn.delay)
        if pick.retry and turn.retry_delay:
            app.stopping.wait(turn.retry_delay)
        if turn.hang is not None:
            self._record({**entry, **used, "status": None}, body)
            app.stopping.wait(None if math.isinf(turn.hang) else turn.hang)
            self._abort()
            return
        wire = WIRES[family]
        if turn.error is not None:
            reply: Reply = wire.error(turn.error, request)
        else:
            answer, missing = answer_for(turn, request, app.scenario.cwd)
            if missing:
                used["captures_missing"] = missing
            reply = wire.message(answer, request)
        self._record({**entry, **used, "status": reply.status}, body)
        self._send(reply, turn.cut, turn.cut_after)

    def _reply_error(
        self,
        family: Family,
        status: int,
        message: str,
        entry: dict[str, Any],
        body: bytes,
        answer: str,
        request: Incoming | None,
    ) -> None:
        self._record({**entry, "family": family, "answer": answer, "status": status, "error": message}, body)
        self._send(WIRES[family].error(ErrorReply(status, message=message), request))

    def _record(self, entry: dict[str, Any], body: bytes) -> None:
        self.app.log.add(entry, dict(self.headers.items()), body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
            raw = bytes(data)
        else:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            try:
                return gzip.decompress(raw)
            except (OSError, EOFError):
                return raw
        return raw

    def _send(self, reply: Reply, cut: str | None = None, cut_after: int | None = None) -> None:
        self._started = True
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.events is None:
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if cut:
                self.wfile.write(reply.body[: len(reply.body) // 2])
                self._abort()
                return
            self.wfile.write(reply.body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        frames = reply.events
        if cut:
            frames = frames[: len(frames) // 2 if cut_after is None else cut_after]
        for frame in frames:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
        if cut == "abort":
            self._abort()
            return
        self.wfile.write(b"0\r\n\r\n")

    def _abort(self) -> None:
        """Drop the connection without finishing the response (the client sees it cut)."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve_until_signal(server: ModelServer) -> None:
    """Serve on this thread until SIGTERM or SIGINT, then close (also as PID 1 in a container)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        # close() waits for serve_forever to return, so it must not run on the serving thread.
        threading.Thread(target=server.close, name="modelserver-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
