#!/usr/bin/env python3
"""Local HTTP/1.1 test server for pg_workflow's HTTP steps.

The TAP tests (test/t/*.pl) and the benchmark start this server on
127.0.0.1 and point workflow steps at it.  It mimics the slices of the
Zendesk and ClickUp REST APIs that the ticket-sync workflow uses, and adds
endpoints that misbehave on purpose (slow, flaky, redirecting, huge, silent)
so that timeouts, retries and size limits in the libcurl client can be
tested, plus inspection endpoints that let a test see what was sent.

Only the Python 3.11 standard library is used.  Connections are served by
asyncio streams, so thousands of concurrent connections cost little.

Usage:
    python3 test/http_server.py [--host ADDR] [--port N] [--token TOKEN]
                                [--port-file PATH] [--log-limit N]

--host is 127.0.0.1 by default; another loopback address (127.0.0.2) gives
a second, distinct host for tests of host-bound secrets and redirects.
Port 0 (the default) picks a free port.  Once listening, the port number is
written atomically to --port-file and "listening on HOST:PORT" is
printed to stdout.  SIGTERM or SIGINT shuts the server down cleanly.

Endpoints (JSON unless noted):
    GET|PUT /api/v2/tickets/{id}.json   Zendesk ticket (PUT merges "ticket")
    POST    /api/v2/list/{list_id}/task ClickUp task creation (Authorization
                                        must equal --token; Idempotency-Key
                                        makes repeats return the same task)
    GET     /api/v2/task/{id}           ClickUp task lookup
    GET     /_requests                  log of received requests
    POST    /_reset                     clear log, tasks, flaky counters, stats
    GET     /_stats                     request counters and concurrency
    *       /slow?ms=N                  answer after N ms
    *       /status/{code}[?retry_after=S]
    *       /flaky?key=K&fail=N[&code=503][&retry_after=S]
    *       /redirect/{n}               302 chain down to /redirect/0
    *       /redirect-to?url=U[&status=302]  redirect to U (301, 302, 303,
                                        307 or 308)
    *       /huge?mb=N[&content_length=0]  N MiB JSON document, streamed
    *       /never                      read the request, never answer
    *       /echo                       describe the request back
    *       /echo64                     the same, base64-encoded (as a
                                        server that wants what it was sent
                                        back unrecognised would answer)
    *       /text                       text/plain body
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import email.utils
import hashlib
import http
import json
import os
import re
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DEFAULT_HOST = "127.0.0.1"
MIB = 1024 * 1024
CHUNK_SIZE = 64 * 1024
MAX_LINE = 64 * 1024            # request line / single header line
MAX_HEADERS = 200
MAX_BODY = 64 * MIB
LISTEN_BACKLOG = 4096
TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
INSPECTION_PATHS = frozenset({"/_requests", "/_reset"})


# --------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------

@dataclass
class State:
    """Everything mutable in the server; exactly one instance exists."""

    token: str = "test-token"
    log: collections.deque[dict[str, Any]] = field(
        default_factory=collections.deque)
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    tasks_by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks_by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks_created: int = 0
    flaky: dict[str, int] = field(default_factory=dict)
    connections: set[asyncio.Task[None]] = field(default_factory=set)

    def reset(self) -> None:
        """Forget requests, tasks, flaky counters and counters."""
        self.log.clear()
        self.requests = 0
        self.max_in_flight = self.in_flight
        self.tasks_by_key.clear()
        self.tasks_by_id.clear()
        self.tasks_created = 0
        self.flaky.clear()


# --------------------------------------------------------------------------
# Request / response model
# --------------------------------------------------------------------------

class BadRequest(Exception):
    """The request cannot be parsed; answer with `status` and close."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ClientGone(Exception):
    """The peer closed the connection; stop serving it silently."""


@dataclass
class Request:
    method: str
    target: str
    path: str
    raw_query: str
    query: dict[str, str]
    version: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool
    reader: asyncio.StreamReader

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not valid JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    # Streaming body: produced chunk by chunk, `length` bytes in total
    # (None: no Content-Length, the connection is closed afterwards).
    stream: Callable[[], AsyncIterator[bytes]] | None = None
    length: int | None = None


def json_response(status: int, obj: Any,
                  headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(obj).encode()
    return Response(status=status, body=body, headers=headers or [])


def query_int(req: Request, name: str, default: int | None = None) -> int:
    """Integer query parameter; BadRequest when missing or malformed."""
    raw = req.query.get(name)
    if raw is None:
        if default is None:
            raise BadRequest(f"missing query parameter {name!r}")
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer")


def query_float(req: Request, name: str, default: float) -> float:
    raw = req.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be a number")
    if not value >= 0:          # also rejects NaN
        raise BadRequest(f"query parameter {name!r} must be >= 0")
    return value


# --------------------------------------------------------------------------
# Zendesk
# --------------------------------------------------------------------------

def zendesk_ticket(ticket_id: int) -> dict[str, Any]:
    return {
        "id": ticket_id,
        "subject": f"Ticket {ticket_id}",
        "priority": "high" if ticket_id % 2 == 0 else "low",
        "status": "open",
        "requester_id": 1000 + ticket_id,
    }


def parse_ticket_id(raw: str) -> int | None:
    return int(raw) if raw.isascii() and raw.isdigit() else None


async def zendesk_get(req: Request, state: State, raw_id: str) -> Response:
    ticket_id = parse_ticket_id(raw_id)
    if ticket_id is None:
        return json_response(404, {"error": "RecordNotFound"})
    return json_response(200, {"ticket": zendesk_ticket(ticket_id)})


async def zendesk_put(req: Request, state: State, raw_id: str) -> Response:
    ticket_id = parse_ticket_id(raw_id)
    if ticket_id is None:
        return json_response(404, {"error": "RecordNotFound"})
    payload = req.json()
    if not isinstance(payload, dict) or not isinstance(
            payload.get("ticket"), dict):
        return json_response(400, {
            "error": "RecordInvalid",
            "description": "body must be a JSON object with a \"ticket\" "
                           "object"})
    ticket = zendesk_ticket(ticket_id) | payload["ticket"]
    ticket["id"] = ticket_id
    return json_response(200, {"ticket": ticket})


# --------------------------------------------------------------------------
# ClickUp
# --------------------------------------------------------------------------

def clickup_task_id(list_id: str, name: str, idempotency_key: str) -> str:
    digest = hashlib.sha1((list_id + name + idempotency_key).encode())
    return "t" + digest.hexdigest()[:8]


def clickup_new_task(list_id: str, name: str, key: str) -> dict[str, Any]:
    task_id = clickup_task_id(list_id, name, key)
    return {
        "id": task_id,
        "name": name,
        "list": {"id": list_id},
        "url": f"https://app.clickup.local/t/{task_id}",
    }


async def clickup_create(req: Request, state: State,
                         list_id: str) -> Response:
    if req.headers.get("authorization") != state.token:
        return json_response(401, {"err": "Token invalid",
                                   "ECODE": "OAUTH_025"})
    payload = req.json()
    name = payload.get("name") if isinstance(payload, dict) else None
    if not isinstance(name, str) or not name:
        return json_response(400, {"err": "Task name invalid"})
    key = req.headers.get("idempotency-key")
    if key is not None and key in state.tasks_by_key:
        stored = state.tasks_by_key[key]
        if stored["name"] != name or stored["list"]["id"] != list_id:
            return json_response(422, {
                "err": "Idempotency-Key reused with a different request"})
        return json_response(200, stored)
    task = clickup_new_task(list_id, name, key or "")
    if key is not None:
        state.tasks_by_key[key] = task
    state.tasks_by_id[task["id"]] = task
    state.tasks_created += 1
    return json_response(200, task)


async def clickup_get(req: Request, state: State, task_id: str) -> Response:
    task = state.tasks_by_id.get(task_id)
    if task is None:
        return json_response(404, {"err": "Task not found",
                                   "ECODE": "ITEM_013"})
    return json_response(200, task)


# --------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------

async def inspect_requests(req: Request, state: State) -> Response:
    return json_response(200, {"requests": list(state.log)})


async def inspect_reset(req: Request, state: State) -> Response:
    state.reset()
    return json_response(200, {"reset": True})


async def inspect_stats(req: Request, state: State) -> Response:
    return json_response(200, {
        "requests": state.requests,
        "in_flight": state.in_flight,
        "max_in_flight": state.max_in_flight,
        "tasks_created": state.tasks_created,
    })


# --------------------------------------------------------------------------
# Misbehaving and utility endpoints
# --------------------------------------------------------------------------

async def slow(req: Request, state: State) -> Response:
    ms = query_int(req, "ms", 0)
    if ms < 0:
        raise BadRequest("ms must be >= 0")
    await asyncio.sleep(ms / 1000)
    return json_response(200, {"slept": ms})


def reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


async def status_code(req: Request, state: State, raw: str) -> Response:
    code = int(raw)
    if not 200 <= code <= 599:
        return json_response(400, {"error": "status must be 200-599"})
    headers = []
    if "retry_after" in req.query:
        headers.append(("Retry-After", req.query["retry_after"]))
    return json_response(code, {"status": code}, headers)


async def flaky(req: Request, state: State) -> Response:
    key = req.query.get("key", "")
    fail = query_int(req, "fail", 1)
    code = query_int(req, "code", 503)
    if not 200 <= code <= 599:
        raise BadRequest("code must be 200-599")
    attempt = state.flaky.get(key, 0) + 1
    state.flaky[key] = attempt
    if attempt > fail:
        return json_response(200, {"attempts": attempt})
    headers = []
    if "retry_after" in req.query:
        headers.append(("Retry-After", req.query["retry_after"]))
    return json_response(code, {"attempt": attempt}, headers)


async def redirect(req: Request, state: State, raw: str) -> Response:
    n = int(raw)
    if n == 0:
        return json_response(200, {"redirected": True})
    location = f"/redirect/{n - 1}"
    return json_response(302, {"location": location},
                         [("Location", location)])


async def redirect_to(req: Request, state: State) -> Response:
    location = req.query.get("url", "")
    status = query_int(req, "status", 302)
    if not location or status not in (301, 302, 303, 307, 308):
        raise BadRequest("url and a status of 301, 302, 303, 307 or 308 needed")
    return json_response(status, {"location": location},
                         [("Location", location)])


def huge_chunks(size: int) -> Callable[[], AsyncIterator[bytes]]:
    """A generator factory for a `size`-byte JSON document {"data": "x..."}."""
    head, tail = b'{"data": "', b'"}'
    filler = b"x" * CHUNK_SIZE

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        remaining = size - len(head) - len(tail)
        while remaining > 0:
            n = min(remaining, CHUNK_SIZE)
            yield filler if n == CHUNK_SIZE else filler[:n]
            remaining -= n
        yield tail

    return chunks


async def huge(req: Request, state: State) -> Response:
    size = max(int(query_float(req, "mb", 1) * MIB), len(b'{"data": ""}'))
    with_length = req.query.get("content_length", "1") != "0"
    response = Response(stream=huge_chunks(size), length=size)
    if not with_length:
        response.length = None
    return response


async def never(req: Request, state: State) -> Response:
    """Consume whatever the client sends until it hangs up."""
    while await req.reader.read(CHUNK_SIZE):
        pass
    raise ClientGone()


def describe(req: Request) -> dict[str, Any]:
    return {
        "method": req.method,
        "path": req.path,
        "query": req.query,
        "headers": req.headers,
        "body": req.text(),
        "json": req.json(),
    }


async def echo(req: Request, state: State) -> Response:
    return json_response(200, describe(req))


async def echo64(req: Request, state: State) -> Response:
    raw = json.dumps(describe(req)).encode()
    return json_response(200, {"b64": base64.b64encode(raw).decode("ascii")})


async def text(req: Request, state: State) -> Response:
    return Response(body=b"plain text response",
                    content_type="text/plain; charset=utf-8")


# --------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------

Handler = Callable[..., Awaitable[Response]]
ANY = None
ROUTES: list[tuple[frozenset[str] | None, re.Pattern[str], Handler]] = [
    (frozenset({"GET"}), re.compile(r"/api/v2/tickets/([^/]+)\.json"),
     zendesk_get),
    (frozenset({"PUT"}), re.compile(r"/api/v2/tickets/([^/]+)\.json"),
     zendesk_put),
    (frozenset({"POST"}), re.compile(r"/api/v2/list/([^/]+)/task"),
     clickup_create),
    (frozenset({"GET"}), re.compile(r"/api/v2/task/([^/]+)"), clickup_get),
    (frozenset({"GET"}), re.compile(r"/_requests"), inspect_requests),
    (frozenset({"POST"}), re.compile(r"/_reset"), inspect_reset),
    (frozenset({"GET"}), re.compile(r"/_stats"), inspect_stats),
    (ANY, re.compile(r"/slow"), slow),
    (ANY, re.compile(r"/status/([0-9]{1,3})"), status_code),
    (ANY, re.compile(r"/flaky"), flaky),
    (ANY, re.compile(r"/redirect/([0-9]{1,6})"), redirect),
    (ANY, re.compile(r"/redirect-to"), redirect_to),
    (ANY, re.compile(r"/huge"), huge),
    (ANY, re.compile(r"/never"), never),
    (ANY, re.compile(r"/echo"), echo),
    (ANY, re.compile(r"/echo64"), echo64),
    (ANY, re.compile(r"/text"), text),
]


async def dispatch(req: Request, state: State) -> Response:
    """Route a request; HEAD is served like GET (the body is dropped later)."""
    method = "GET" if req.method == "HEAD" else req.method
    allowed: set[str] = set()
    for methods, pattern, handler in ROUTES:
        match = pattern.fullmatch(req.path)
        if match is None:
            continue
        if methods is not None and method not in methods:
            allowed |= methods
            continue
        return await handler(req, state, *match.groups())
    if allowed:
        allow = ", ".join(sorted(allowed | ({"HEAD"} if "GET" in allowed
                                            else set())))
        return json_response(405, {"error": "method not allowed"},
                             [("Allow", allow)])
    return json_response(404, {"error": "not found"})


# --------------------------------------------------------------------------
# HTTP/1.1 wire protocol
# --------------------------------------------------------------------------

async def read_line(reader: asyncio.StreamReader) -> bytes:
    """One line without its terminator; ClientGone at EOF."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest("truncated request")
        raise ClientGone()
    except asyncio.LimitOverrunError:
        raise BadRequest("line too long", 431)
    except (ConnectionError, OSError):
        raise ClientGone()
    return line.rstrip(b"\r\n")


async def read_request_line(reader: asyncio.StreamReader
                            ) -> tuple[str, str, str]:
    line = await read_line(reader)
    while not line:                 # tolerate stray CRLFs between requests
        line = await read_line(reader)
    parts = line.split(b" ")
    if len(parts) != 3 or not TOKEN_RE.match(parts[0]) or not parts[1]:
        raise BadRequest("malformed request line")
    version = parts[2]
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if re.fullmatch(rb"HTTP/[0-9]\.[0-9]", version):
            raise BadRequest("HTTP version not supported", 505)
        raise BadRequest("malformed request line")
    try:
        target = parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("non-ASCII request target")
    if any(c.isspace() or ord(c) < 0x21 for c in target):
        raise BadRequest("malformed request target")
    return parts[0].decode("ascii"), target, version.decode("ascii")


async def read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = await read_line(reader)
        if not line:
            return headers
        name, sep, value = line.partition(b":")
        if not sep or not TOKEN_RE.match(name):
            raise BadRequest("malformed header line")
        key = name.decode("ascii").lower()
        val = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {val}" if key in headers else val
    raise BadRequest("too many header fields", 431)


def wants_keep_alive(version: str, headers: dict[str, str]) -> bool:
    tokens = {t.strip().lower()
              for t in headers.get("connection", "").split(",")}
    if "close" in tokens:
        return False
    return version == "HTTP/1.1" or "keep-alive" in tokens


def content_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise BadRequest("Transfer-Encoding request bodies are not "
                         "supported", 501)
    raw = headers.get("content-length")
    if raw is None:
        return 0
    values = {v.strip() for v in raw.split(",")}
    if len(values) != 1:
        raise BadRequest("conflicting Content-Length")
    value = values.pop()
    if not value.isascii() or not value.isdigit():
        raise BadRequest("malformed Content-Length")
    length = int(value)
    if length > MAX_BODY:
        raise BadRequest("request body too large", 413)
    return length


async def read_body(reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, version: str,
                    headers: dict[str, str]) -> bytes:
    length = content_length(headers)
    if length == 0:
        return b""
    if (version == "HTTP/1.1"
            and headers.get("expect", "").lower() == "100-continue"):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    try:
        return await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        raise ClientGone()


async def read_request(reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> Request:
    method, target, version = await read_request_line(reader)
    headers = await read_headers(reader)
    body = await read_body(reader, writer, version, headers)
    parts = urlsplit(target)
    return Request(
        method=method, target=target, path=parts.path or "/",
        raw_query=parts.query,
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        version=version, headers=headers, body=body,
        keep_alive=wants_keep_alive(version, headers), reader=reader)


def head_bytes(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason(status)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def write_response(writer: asyncio.StreamWriter, resp: Response,
                         head_only: bool, keep_alive: bool) -> bool:
    """Send `resp`; returns whether the connection may be reused."""
    if resp.stream is not None and resp.length is None:
        keep_alive = False
    no_body = head_only or resp.status in (204, 304)
    headers = [("Date", email.utils.formatdate(usegmt=True)),
               ("Server", "pg_workflow-test"),
               ("Content-Type", resp.content_type)]
    length = resp.length if resp.stream is not None else len(resp.body)
    if length is not None:
        headers.append(("Content-Length",
                        "0" if resp.status in (204, 304) else str(length)))
    headers.append(("Connection", "keep-alive" if keep_alive else "close"))
    headers += resp.headers
    writer.write(head_bytes(resp.status, headers))
    if not no_body:
        if resp.stream is None:
            writer.write(resp.body)
        else:
            async for chunk in resp.stream():
                writer.write(chunk)
                await writer.drain()
    await writer.drain()
    return keep_alive


def log_request(state: State, req: Request) -> None:
    if req.path in INSPECTION_PATHS:
        return
    state.requests += 1
    state.log.append({
        "method": req.method,
        "path": req.path,
        "query": req.query,
        "headers": req.headers,
        "body": req.text(),
        "at": time.time(),
    })


async def serve_one(req: Request, state: State,
                    writer: asyncio.StreamWriter) -> bool:
    """Answer one parsed request; returns whether to keep the connection."""
    log_request(state, req)
    state.in_flight += 1
    state.max_in_flight = max(state.max_in_flight, state.in_flight)
    try:
        try:
            resp = await dispatch(req, state)
        except BadRequest as exc:
            resp = json_response(exc.status, {"error": str(exc)})
        return await write_response(writer, resp, req.method == "HEAD",
                                    req.keep_alive)
    finally:
        state.in_flight -= 1


async def send_error(writer: asyncio.StreamWriter, exc: BadRequest) -> None:
    resp = json_response(exc.status, {"error": str(exc)})
    with contextlib.suppress(ConnectionError, OSError):
        await write_response(writer, resp, head_only=False, keep_alive=False)


async def handle_connection(state: State, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
    task = asyncio.current_task()
    assert task is not None
    state.connections.add(task)
    try:
        keep_alive = True
        while keep_alive:
            try:
                req = await read_request(reader, writer)
            except BadRequest as exc:
                await send_error(writer, exc)
                break
            keep_alive = await serve_one(req, state, writer)
    except (ClientGone, ConnectionError, OSError):
        pass
    except asyncio.CancelledError:
        pass                        # server shutting down
    finally:
        state.connections.discard(task)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# --------------------------------------------------------------------------
# Startup and shutdown
# --------------------------------------------------------------------------

def write_port_file(path: str, port: int) -> None:
    """Write the port atomically: temp file in the same directory, rename."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def raise_fd_limit() -> None:
    """Allow as many open connections as the hard limit permits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def shutdown(server: asyncio.Server, state: State) -> None:
    server.close()
    for task in list(state.connections):
        task.cancel()
    await asyncio.gather(*state.connections, return_exceptions=True)
    await server.wait_closed()


async def run(args: argparse.Namespace) -> None:
    state = State(token=args.token,
                  log=collections.deque(maxlen=args.log_limit or None))
    server = await asyncio.start_server(
        lambda r, w: handle_connection(state, r, w), args.host, args.port,
        backlog=LISTEN_BACKLOG, limit=MAX_LINE)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.port_file:
        write_port_file(args.port_file, port)
    print(f"listening on {args.host}:{port}", flush=True)
    await stop.wait()
    await shutdown(server, state)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0,
                        help="TCP port (0: pick a free one)")
    parser.add_argument("--token", default="test-token",
                        help="expected ClickUp Authorization header value")
    parser.add_argument("--port-file",
                        help="write the listening port to this file")
    parser.add_argument("--log-limit", type=int, default=100_000,
                        help="keep at most this many entries in /_requests "
                             "(0: unlimited)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
