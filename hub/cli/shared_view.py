"""CLI commands of this component, registered on the ``hub`` app by ``hub.cli``."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

import typer
from rich.console import Console

from hub.cli.options import ConsumerWorkers

out = Console()
err = Console(stderr=True)

_PERSON_KEY = re.compile(r"^[0-9a-f]{32}$")


def run_shared_view(
    api: Annotated[bool, typer.Option(help="Serve the HTTP API on HUB_SHARED_VIEW_PORT too")] = True,
    workers: ConsumerWorkers = 1,
) -> None:
    """Consented shared view: the projection consumer and its scoped, recorded HTTP reads. With
    --workers N, N projection processes (the first also serves the API and holds the role)."""
    from consumers.shared_view.service import ApiService, ProjectionService
    from infra.leadership import SharedEpoch
    from infra.runner import Service, run_forever, worker_index

    share = SharedEpoch() if workers > 1 else None  # before the workers are forked

    def build(settings, pool):
        lead = worker_index() == 0
        services: list[Service] = [ProjectionService(settings, pool, share=share, lead=lead)]
        if api and lead:
            services.append(ApiService(settings))
        return services

    run_forever(build, workers=workers)


def erase(
    person: Annotated[str, typer.Argument(help="Pseudonymous person key (32 lowercase hex)")],
    by: Annotated[str, typer.Option(help="Who asked (kept on the erasure register)")] = "cli",
) -> None:
    """Erase a person: delete their data key (their sealed data becomes unreadable everywhere) and rows."""
    if not _PERSON_KEY.match(person):
        err.print(f"[red]person: must be 32 lowercase hex characters (got {len(person)} characters)[/]")
        raise typer.Exit(2)
    from consumers.shared_view.erasure import erase_person
    from infra.config import get_settings
    from infra.crypto import KeyStore
    from infra.runner import prepare
    from infra.signing import erasure_signer

    async def _main() -> None:
        settings = get_settings()
        pool = await prepare(settings)
        try:
            async with pool.acquire() as conn:
                result = await erase_person(
                    conn,
                    KeyStore.from_settings(settings),
                    person,
                    requested_by=by,
                    namespace=settings.topic_namespace,
                    signer=erasure_signer(settings),
                )
        finally:
            await pool.close()
        note = " (already on the erasure register)" if result.already_erased else ""
        out.print(
            f"erased {person}{note}: data key {'deleted' if result.key_deleted else 'was already gone'}, "
            f"{result.rows_deleted} rows deleted; erasure event {result.event_id} is in the outbox for the "
            "relay (every consumer and service drops the person on it)"
        )

    asyncio.run(_main())


replay_app = typer.Typer(no_args_is_help=True, add_completion=False)


@replay_app.command("shared-view")
def replay_shared_view(workers: ConsumerWorkers = 1) -> None:
    """Rebuild the shared view from the topics, honouring today's consents and erasures. With
    --workers N, in N processes, each given its share of the partition numbers (the same view as one
    process builds)."""
    from consumers.shared_view.replay import ReplayRefused, ReplayResult, replay, replay_in_processes
    from hub.cli.main import progress_bar
    from infra.config import get_settings
    from infra.logging import configure_logging
    from infra.runner import prepare

    settings = get_settings()
    configure_logging("WARNING")

    async def _main() -> ReplayResult | None:
        pool = await prepare(settings)
        try:
            if workers > 1:
                return None  # the database is migrated; the workers are forked with no event loop here
            with progress_bar() as bar:
                task = bar.add_task("replay shared-view", total=None)
                return await replay(
                    settings,
                    pool,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
        finally:
            await pool.close()

    try:
        result = asyncio.run(_main()) or replay_in_processes(settings, workers)
    except ReplayRefused as refused:
        err.print(f"[red]{refused.reason}[/]")
        raise typer.Exit(1) from None
    rate = result.events / result.seconds if result.seconds else 0.0
    each = f" by {workers} processes" if workers > 1 else ""
    out.print(
        f"replayed {result.events} records{each} in {result.seconds:.1f} s ({rate:,.0f}/s): "
        f"{result.persons} people in the view, {result.masked_events} events of erased people masked"
    )


def erasure_key(
    new: Annotated[
        bool, typer.Option("--new", help="Make a new key pair (the private key goes to your secret store)")
    ] = False,
) -> None:
    """Print the HUB_ERASURE_VERIFY_KEYS entry (key id:public key) of the operator's erasure key
    (HUB_ERASURE_SIGNING_KEY): every consumer and key-holding service lists it; only the operator side holds
    the private key. To rotate: --new, add its entry to HUB_ERASURE_VERIFY_KEYS everywhere, then give the
    operator side the new HUB_ERASURE_SIGNING_KEY; remove an old entry to retire its key."""
    from infra.config import get_settings
    from infra.signing import new_signing_key, verify_entry_of

    if new:
        private = new_signing_key()
        entry = verify_entry_of(private)
        out.print(f"HUB_ERASURE_SIGNING_KEY={private}", soft_wrap=True)
        out.print(f"HUB_ERASURE_VERIFY_KEYS={entry}", soft_wrap=True)
        err.print(
            f"key id {entry.split(':', 1)[0]}. Rotating: add this entry to HUB_ERASURE_VERIFY_KEYS "
            "(comma-separated) on every service first, then give the operator side the new "
            "HUB_ERASURE_SIGNING_KEY; keep an old entry while its erasures must still verify on replay.",
            soft_wrap=True,
        )
        return
    settings = get_settings()
    if settings.erasure_signing_key is None:
        err.print("[red]HUB_ERASURE_SIGNING_KEY is not set here (hub erasure-key --new makes a pair)[/]")
        raise typer.Exit(2)
    try:
        entry = verify_entry_of(settings.erasure_signing_key.get_secret_value())
    except ValueError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    out.print(f"HUB_ERASURE_VERIFY_KEYS={entry}", soft_wrap=True)
    err.print(f"key id {entry.split(':', 1)[0]}", soft_wrap=True)


def register(app: typer.Typer, run_app: typer.Typer) -> None:
    """Add this component's commands: top-level ones on ``app``, services on ``run_app`` (``hub run X``)."""
    run_app.command("shared-view")(run_shared_view)
    app.command("erase")(erase)
    app.command("erasure-key")(erasure_key)
    app.add_typer(replay_app, name="replay", help="Rebuild a projection from the topics, from scratch")
