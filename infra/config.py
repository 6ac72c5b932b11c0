"""Hub configuration: every setting comes from an environment variable with the ``HUB_`` prefix.

The defaults point at the local stack that ``hub stack up`` starts (and that ``compose.yaml`` mirrors),
so a fresh checkout needs no configuration at all.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.envelope import Family, deadletter_topic, feed_topic, topic_for

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The demo's master key and the local stack's database password: public, so never a production secret.
DEMO_MASTER_KEY = "ZGVtby1vbmx5LW1hc3Rlci1rZXktMzItYnl0ZXMhISE="
DEFAULT_PG_PASSWORD = "ittai"
# Written by `hub stack up` into the stack directory: this machine runs the local development stack.
LOCAL_STACK_MARKER = "LOCAL-DEVELOPMENT-STACK"


def master_key_bytes(encoded: str) -> bytes:
    """``HUB_MASTER_KEY``'s 32 bytes (base64)."""
    key = base64.b64decode(encoded)
    if len(key) != 32:
        raise ValueError(f"HUB_MASTER_KEY must decode to 32 bytes, got {len(key)}")
    return key


class InsecureConfiguration(RuntimeError):
    """A service would start with a public secret outside a local development stack."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore")

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:19092"
    topic_namespace: str = Field(default="ittai", pattern=r"^[a-z][a-z0-9_-]{0,40}$")
    topic_partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    min_insync_replicas: int = Field(default=1, ge=1)
    # How every Kafka client of the hub authenticates (``infra.kafka.client_options``). A secure cluster
    # (``hub stack up --secure``, or production) takes SASL_SSL with SCRAM-SHA-512: each service its own
    # user (principal), whose ACLs allow exactly its job (README "Broker security").
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None  # the CA that signed the brokers' certificates (PEM)

    # --- PostgreSQL ----------------------------------------------------------------------------
    pg_host: str = "127.0.0.1"
    pg_port: int = 55432
    pg_user: str = "ittai"
    pg_password: str = "ittai"
    pg_database: str = "ittai"

    # --- Local stack (hub stack ...) -----------------------------------------------------------
    stack_dir: Path = PROJECT_ROOT / ".stack"
    kafka_version: str = "4.3.1"
    kafka_port_base: int = 19092  # node n listens on base + 100*(n-1), its controller on +1
    # Each broker's JVM heap. 512 MiB ran out (OutOfMemoryError) on a long-lived development broker holding
    # ~14,000 partitions of test namespaces; a 3-node cluster on a small machine wants less ("-Xms128m -Xmx384m").
    kafka_heap_opts: str = "-Xms256m -Xmx1g"
    pg_os_user: str = "postgres"  # PostgreSQL refuses to run as root; the stack runs it as this user

    # --- Runtime ---------------------------------------------------------------------------------
    batch_max_records: int = Field(default=2000, ge=1)
    batch_timeout_ms: int = Field(default=200, ge=1)
    # A consumer batch's effect and positions are derived from Kafka, which keeps the records: a batch
    # lost with the last ~0.6 s of commits when PostgreSQL itself crashes is redelivered and applied once
    # again (its positions are lost with it), so the runtime need not wait for the WAL flush. True waits.
    consumer_sync_commit: bool = False
    retry_max_backoff_s: float = 10.0
    outbox_poll_interval_s: float = 0.2
    outbox_batch_size: int = 1000
    log_level: str = "INFO"

    # --- HTTP services ---------------------------------------------------------------------------
    http_host: str = "127.0.0.1"
    # Hostile input is bounded before it costs anything (README "Limits"): bodies by Content-Length (or
    # as they stream in) before they are read, files by bytes, rows and columns.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)  # JSON: a 1,000-event batch is ~1.5 MB
    max_file_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)  # a CSV upload
    max_file_rows: int = Field(default=200_000, ge=1)
    max_file_columns: int = Field(default=64, ge=1)
    welfare_port: int = 8081
    employment_port: int = 8082
    shared_view_port: int = 8083
    console_port: int = 8080

    # --- Personal data ---------------------------------------------------------------------------
    # Master key that wraps each person's data key (base64, 32 bytes). The default is for the local
    # demo only; production sets HUB_MASTER_KEY from a secret store.
    master_key: str = DEMO_MASTER_KEY
    # Erasures are signed by the operator side and verified everywhere they are acted on (infra.signing):
    # the Ed25519 private key (32-byte seed, base64) only ``hub erase`` and the shared-view API hold, and
    # the public keys for every consumer and key-holding service: ``key_id:public_key`` entries separated
    # by commas (``hub erasure-key`` prints one), several while keys rotate. Unset on a local development
    # stack: a public demo pair.
    erasure_signing_key: SecretStr | None = None
    erasure_verify_keys: str | None = None
    # Replaced by ``erasure_verify_keys`` (which names each key): a service where it is still set refuses to
    # start and says so, rather than ignore the operator's key silently.
    erasure_verify_key: str | None = None
    # "local" declares a development stack (./dev demo, ./dev test, the test suite set it; `hub stack up`
    # leaves a marker in the stack directory). Anything else refuses the public defaults above.
    environment: str = Field(default="production", pattern=r"^(production|staging|local)$")

    # --- Placement feed --------------------------------------------------------------------------
    feed_suppression_threshold: int = Field(default=3, ge=1)
    feed_cutoff_day: int = Field(default=5, ge=1, le=28)

    # --- Operator console and metrics (issue 6) --------------------------------------------------
    # Signs console session cookies; unset, each console process draws a random one (sessions then end
    # when it restarts). Production sets HUB_CONSOLE_SESSION_SECRET from a secret store.
    console_session_secret: str | None = None
    console_session_max_age_s: int = Field(default=8 * 3600, ge=60)
    console_cookie_secure: bool = False  # True behind HTTPS
    console_sample_interval_s: float = Field(default=5.0, gt=0)
    console_sample_retention_h: float = Field(default=24.0, gt=0)
    # Prometheus port for services without HTTP (hub run event-log, relay, ...); unset: no endpoint.
    metrics_port: int | None = None

    # --- Placement feed service (issue 5) ------------------------------------------------------------
    feed_port: int = 8084  # HTTP download of an authority's own feed (hub run feed-api)
    feed_build_interval_s: float = Field(default=60.0, gt=0)  # hub run placement-feed: build due revisions
    # Worker processes composing a share of each chunk of feeds beside the builder (0: the builder alone).
    # 0 by default: on a quiet 2-core machine one worker built the national month in 0.72-1.10x the
    # builder alone's wall time for ~1.5x its CPU (bench_feed, session 8), as PostgreSQL needs the other
    # core. Set it where cores are spare.
    feed_build_workers: int = Field(default=0, ge=0, le=64)

    # --- Feed portal for authority staff (issue 15): hub run portal -------------------------------
    portal_port: int = 8085
    portal_session_secret: str | None = None  # like the console's: unset, sessions end at restart
    portal_session_max_age_s: int = Field(default=8 * 3600, ge=60)
    portal_cookie_secure: bool = False  # True behind HTTPS

    # --- Adapters (issue 3) ----------------------------------------------------------------------
    # Each adapter runs the outbox relay in-process so accepted events reach Kafka with nothing else
    # running. Set false when a separate ``hub run relay`` publishes (frees the adapter's CPU for HTTP).
    adapter_runs_relay: bool = True

    @model_validator(mode="after")
    def _follow_the_local_cluster(self) -> Settings:
        """Unless set explicitly, Kafka settings follow the local cluster ``hub stack up`` formatted under
        ``stack_dir``: every node in the bootstrap list and, for three nodes, replication factor 3 with
        ``min.insync.replicas`` 2 — so ``hub stack up --nodes 3`` needs no further configuration."""
        cluster = _local_cluster(self.stack_dir)
        if cluster is None:
            return self
        nodes = int(cluster["nodes"])
        explicit = self.model_fields_set
        if "kafka_bootstrap" not in explicit:
            self.kafka_bootstrap = ",".join(
                f"127.0.0.1:{self.kafka_port_base + 100 * i}" for i in range(nodes)
            )
        if nodes >= 3:
            if "replication_factor" not in explicit:
                self.replication_factor = 3
            if "min_insync_replicas" not in explicit:
                self.min_insync_replicas = 2
        if cluster.get(
            "secure"
        ):  # ``hub stack up --secure``: TLS with the stack's own CA (the user is yours)
            if "kafka_security_protocol" not in explicit:
                self.kafka_security_protocol = "SASL_SSL"
            if "kafka_ssl_cafile" not in explicit:
                self.kafka_ssl_cafile = self.stack_dir / "kafka" / "secrets" / "ca.pem"
        return self

    def is_local_development(self) -> bool:
        return self.environment == "local" or (self.stack_dir / LOCAL_STACK_MARKER).is_file()

    def require_secrets(self) -> None:
        """Refuse to run with the demo master key or the default database password unless this is a local
        development stack; the error says what to set."""
        problems = []
        # Compared as bytes: base64 spells the same key in more than one way (the last character's unused
        # bits; characters outside the alphabet, which the decoder skips).
        try:
            demo_key = master_key_bytes(self.master_key) == master_key_bytes(DEMO_MASTER_KEY)
        except ValueError:  # not a key at all: the key store refuses it where it is used
            demo_key = False
        if demo_key:
            problems.append(
                "HUB_MASTER_KEY is unset (or the demo key): set it to 32 random bytes, base64, from your "
                "secret store (python -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')"
            )
        if self.pg_password == DEFAULT_PG_PASSWORD:
            problems.append("HUB_PG_PASSWORD is the local stack's default: set the database password")
        if problems and not self.is_local_development():
            raise InsecureConfiguration(
                "refusing to start with public secrets: "
                + "; ".join(problems)
                + ". On a local development stack set HUB_ENVIRONMENT=local (hub stack up, ./dev demo and "
                "./dev test do)."
            )

    def topic(self, family: Family) -> str:
        return topic_for(family, self.topic_namespace)

    @property
    def event_topics(self) -> tuple[str, ...]:
        return tuple(topic_for(f, self.topic_namespace) for f in Family)

    @property
    def deadletter_topic(self) -> str:
        return deadletter_topic(self.topic_namespace)

    @property
    def feed_topic(self) -> str:
        return feed_topic(self.topic_namespace)

    @property
    def pg_dsn(self) -> str:
        return (
            f"postgresql://{self.pg_user}:{self.pg_password}@{self.pg_host}:{self.pg_port}/{self.pg_database}"
        )


def _local_cluster(stack_dir: Path) -> dict[str, Any] | None:
    """What ``hub stack up`` formatted under ``stack_dir`` (node count, secure or not), if anything."""
    try:
        cluster = json.loads((stack_dir / "kafka" / "cluster.json").read_text())
        int(cluster["nodes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return cluster if isinstance(cluster, dict) else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
