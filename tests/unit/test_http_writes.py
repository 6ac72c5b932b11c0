"""A response leaves the hub's HTTP servers in one send (``infra.http._OneSendPerTurn``): uvicorn writes
the status line and headers, then the body, and each write was a system call of its own."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.responses import Response
from uvicorn.server import ServerState

from infra.http import BodyLimit, JsonAnswer, server


class _Transport:
    """Records what reaches the socket."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.sent.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _protocol() -> Any:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    config = server(app, "127.0.0.1", 0, access_log=False).config
    config.load()
    return config.http_protocol_class(config=config, server_state=ServerState(), app_state={})  # type: ignore[call-arg]


async def _answered(transport: _Transport) -> None:
    for _ in range(200):
        if transport.sent and b'"world"' in transport.sent[-1]:
            return
        await asyncio.sleep(0.01)


async def test_a_response_is_one_send() -> None:
    transport = _Transport()
    protocol = _protocol()
    protocol.connection_made(transport)
    protocol.data_received(b"GET /hello HTTP/1.1\r\nHost: hub\r\n\r\n")
    await _answered(transport)
    assert len(transport.sent) == 1, transport.sent
    head, _, body = transport.sent[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b'{"hello":"world"}'

    # Keep-alive: the next request on the connection is answered in one send too.
    protocol.data_received(b"GET /hello HTTP/1.1\r\nHost: hub\r\n\r\n")
    for _ in range(200):
        if len(transport.sent) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(transport.sent) == 2 and transport.sent[1].endswith(b'\r\n\r\n{"hello":"world"}')


async def test_closing_sends_what_is_pending_first_and_nothing_after() -> None:
    transport = _Transport()
    protocol = _protocol()
    protocol.connection_made(transport)
    protocol.data_received(b"GET /hello HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
    for _ in range(200):
        if transport.closed:
            break
        await asyncio.sleep(0.01)
    assert transport.closed
    assert len(transport.sent) == 1 and transport.sent[0].endswith(b'{"hello":"world"}')
    await asyncio.sleep(0.02)  # a flush scheduled before the close finds nothing left to send
    assert len(transport.sent) == 1


def test_no_answer_names_the_servers_software() -> None:
    """uvicorn adds ``server: uvicorn`` to every answer unless told not to: the hub's servers do not
    advertise what they run (the ``date`` header stays: RFC 9110 wants it from a server with a clock)."""
    config = server(FastAPI(), "127.0.0.1", 0).config
    config.load()
    names = [name.lower() for name, _ in config.encoded_headers]
    assert b"server" not in names


@pytest.mark.parametrize("status", [202, 409, 413, 422])
@pytest.mark.parametrize("headers", [None, [(b"idempotent-replayed", b"true")]])
@pytest.mark.parametrize("body", [b"{}", b'{"event_id":"x","replayed":false}', "髙".encode() * 3000])
async def test_a_json_answer_sends_what_starlettes_response_sends(
    body: bytes, headers: list[tuple[bytes, bytes]] | None, status: int
) -> None:
    sent: dict[str, list[Any]] = {"ours": [], "starlette": []}

    async def receive() -> Any:
        raise AssertionError("an answer reads nothing")

    def sender(name: str) -> Any:
        async def send(message: Any) -> None:
            sent[name].append(message)

        return send

    scope = {"type": "http", "method": "POST", "path": "/v1/referral"}
    ours = JsonAnswer(body, status, headers)
    theirs = Response(
        body,
        status_code=status,
        media_type="application/json",
        headers={k.decode(): v.decode() for k, v in headers} if headers else None,
    )
    await ours(scope, receive, sender("ours"))
    await theirs(scope, receive, sender("starlette"))
    assert ours.status_code == theirs.status_code == status
    assert sent["ours"] == sent["starlette"] and len(sent["ours"]) == 2


_FRAMINGS = {
    "length": [(b"content-length", b"10")],
    "length at the limit": [(b"content-length", b"100")],
    "length past the limit": [(b"content-length", b"101")],
    "length not a number": [(b"content-length", b"1e3")],
    "length signed": [(b"content-length", b"+10")],
    "empty length": [(b"content-length", b"")],
    "two lengths": [(b"content-length", b"10"), (b"content-length", b"10")],
    "length and chunks": [(b"content-length", b"10"), (b"transfer-encoding", b"chunked")],
    "chunks and length": [(b"transfer-encoding", b"chunked"), (b"content-length", b"10")],
    "chunks": [(b"transfer-encoding", b"chunked")],
    "none": [],
}


@pytest.mark.parametrize("path", ["/v1/referral", "/v1/referral/csv"])
@pytest.mark.parametrize("framing", list(_FRAMINGS))
async def test_the_lean_path_skips_the_body_limits_exactly_where_they_would_pass_the_request_on(
    framing: str, path: str
) -> None:
    """``LeanRoutes`` calls a lean endpoint directly where ``BodyLimit.declared_within`` says so: exactly
    the requests ``BodyLimit`` itself hands on untouched (same ``receive``, nothing answered)."""
    seen: list[Any] = []

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        seen.append(receive)

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    answered: list[Any] = []

    async def send(message: Any) -> None:
        answered.append(message)

    limits = BodyLimit(endpoint, body_bytes=100, file_bytes=1000)
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"host", b"hub"), *_FRAMINGS[framing]],
    }
    await limits(scope, receive, send)
    handed_on_untouched = seen == [receive] and not answered
    assert limits.declared_within(scope) == handed_on_untouched
