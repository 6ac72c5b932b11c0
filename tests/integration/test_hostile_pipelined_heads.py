"""A request's head is bounded (``infra.http.MAX_HEAD_BYTES``) whatever came before it on the connection: a
head that arrives in the same read as the end of the previous request is counted too. (``_HttpProtocol``
fed the rest of such a read to the parser uncounted, so a pipelined second request could carry a head
of most of a read, ~200 KiB, and be served.)"""

from __future__ import annotations

from infra.http import MAX_HEAD_BYTES
from tests.integration.test_hostile_requests import _raw, feed_api  # noqa: F401  (the fixture)


async def test_a_pipelined_head_past_the_limit_is_refused(feed_api: tuple[str, str, str]) -> None:  # noqa: F811
    url = feed_api[0]
    mark = b"zq" + b"7" * 10
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    second = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Junk: "
        + mark
        + b"a" * (2 * MAX_HEAD_BYTES)
        + b"\r\n\r\n"
    )
    answer = await _raw(url, first + second)
    assert answer.count(b"HTTP/1.1 200 OK") == 1, answer[:400]
    assert b"HTTP/1.1 431" in answer and mark not in answer, answer[:400]
