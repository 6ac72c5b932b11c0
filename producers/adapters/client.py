"""A small client for the adapters' HTTP API, as a client system (or the demo, or the bench) uses it."""

from __future__ import annotations

from typing import Any

import httpx


class AdapterClient:
    def __init__(
        self, base_url: str, token: str, *, timeout_s: float = 30.0, max_connections: int = 64
    ) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def publish(self, family: str, data: dict[str, Any], *, key: str | None = None) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else None
        return await self.http.post(f"/v1/{family}", json=data, headers=headers)

    async def publish_batch(
        self, family: str, items: list[dict[str, Any]], *, key: str | None = None
    ) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else None
        return await self.http.post(f"/v1/{family}/batch", json=items, headers=headers)

    async def upload_csv(self, family: str, content: bytes, filename: str = "import.csv") -> httpx.Response:
        return await self.http.post(f"/v1/{family}/csv", files={"file": (filename, content, "text/csv")})

    async def aclose(self) -> None:
        await self.http.aclose()
