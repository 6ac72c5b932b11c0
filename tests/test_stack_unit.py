"""Unit tests for devtools.stack that need no running Kafka or PostgreSQL."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pytest

from consumers.runtime import group_id_for
from devtools.stack import kafka, postgres
from devtools.stack import secure as security
from infra.config import Settings
from infra.kafka import KafkaSecurityMisconfigured, client_options
from tests.helpers import free_port


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    s = Settings(stack_dir=tmp_path / ".stack", kafka_port_base=29092)
    monkeypatch.setattr(kafka, "get_settings", lambda: s)
    monkeypatch.setattr(postgres, "get_settings", lambda: s)
    return s


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_ports_and_bootstrap(settings: Settings) -> None:
    assert [kafka.broker_port(n) for n in (1, 2, 3)] == [29092, 29192, 29292]
    assert kafka.controller_port(2) == 29193
    assert kafka.kafka_bootstrap() == "127.0.0.1:29092"  # nothing set up yet: one node
    assert kafka.kafka_bootstrap(3) == "127.0.0.1:29092,127.0.0.1:29192,127.0.0.1:29292"


def test_single_node_properties(settings: Settings) -> None:
    p = props(kafka._server_properties(1, 1))
    assert p["process.roles"] == "broker,controller"
    assert p["controller.quorum.bootstrap.servers"] == "127.0.0.1:29093"
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
        "default.replication.factor",
        "min.insync.replicas",
    ):
        assert p[key] == "1", key
    assert p["num.partitions"] == "1"
    assert p["group.initial.rebalance.delay.ms"] == "0"
    assert Path(p["log.dirs"]).is_absolute()


def test_three_node_properties(settings: Settings) -> None:
    p = props(kafka._server_properties(3, 3))
    assert p["node.id"] == "3"
    assert p["controller.quorum.bootstrap.servers"].count(",") == 2
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:29292,CONTROLLER://127.0.0.1:29293"
    assert p["default.replication.factor"] == "3"
    assert p["min.insync.replicas"] == "2"
    assert p["offsets.topic.replication.factor"] == "3"
    assert p["transaction.state.log.min.isr"] == "2"


def test_kafka_uuid_shape() -> None:
    for _ in range(200):
        u = kafka._kafka_uuid()
        assert len(u) == 22 and not u.startswith("-")
        assert len(base64.urlsafe_b64decode(u + "==")) == 16


def test_node_count_mismatch_needs_reset(settings: Settings) -> None:
    root = kafka.kafka_root()
    root.mkdir(parents=True)
    (root / "cluster.json").write_text('{"cluster_id": "x", "nodes": 1, "dir_ids": ["y"]}')
    assert kafka.formatted_nodes() == 1
    assert kafka.kafka_bootstrap() == "127.0.0.1:29092"
    with pytest.raises(kafka.StackError, match="hub stack reset"):
        kafka.kafka_start(3)
    assert not kafka.is_kafka_up(3)


def test_missing_java_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(kafka.shutil, "which", lambda _name: None)
    with pytest.raises(kafka.StackError) as info:
        kafka.java_bin()
    assert "\n" not in str(info.value)
    assert "openjdk-17-jre-headless" in str(info.value)


def test_missing_postgres_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "PG_INSTALL_ROOT", tmp_path)
    with pytest.raises(kafka.StackError) as info:
        postgres.pg_bin()
    assert "\n" not in str(info.value)
    assert "apt-get install postgresql" in str(info.value)


def test_newest_postgres_is_picked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for version in ("9", "15", "13"):
        bin_dir = tmp_path / version / "bin"
        bin_dir.mkdir(parents=True)
        for exe in ("initdb", "pg_ctl", "postgres"):
            (bin_dir / exe).touch()
    monkeypatch.setattr(postgres, "PG_INSTALL_ROOT", tmp_path)
    assert postgres.pg_bin() == tmp_path / "15" / "bin"


def test_broker_ids_parses_metadata_v4(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def broker(node_id: int, host: bytes, port: int, rack: bytes | None) -> bytes:
        out = struct.pack(">ih", node_id, len(host)) + host + struct.pack(">i", port)
        return out + (struct.pack(">h", -1) if rack is None else struct.pack(">h", len(rack)) + rack)

    body = struct.pack(">iii", 1, 0, 2) + broker(1, b"127.0.0.1", 29092, None) + broker(2, b"h", 1, b"r1")
    body += struct.pack(">h", -1) + struct.pack(">ii", 1, 0)  # cluster id, controller id, topics

    class FakeSocket:
        def __init__(self) -> None:
            self.buf = struct.pack(">i", len(body)) + body

        def __enter__(self) -> FakeSocket:
            return self

        def __exit__(self, *_: object) -> None:
            return None

        def sendall(self, data: bytes) -> None:
            (size,) = struct.unpack(">i", data[:4])
            assert size == len(data) - 4
            assert struct.unpack(">hh", data[4:8]) == (3, 4)  # Metadata v4

        def recv(self, n: int) -> bytes:
            chunk, self.buf = self.buf[:n], self.buf[n:]
            return chunk

    monkeypatch.setattr(kafka.socket, "create_connection", lambda *_a, **_k: FakeSocket())
    assert kafka.broker_ids(1) == {1, 2}


def test_broker_ids_none_when_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    # A port the kernel just gave out and took back: the fixed 29092 of the other tests may be a real
    # broker of another stack on a shared development machine.
    s = Settings(kafka_port_base=free_port())
    monkeypatch.setattr(kafka, "get_settings", lambda: s)
    assert kafka.broker_ids(1, timeout=0.2) is None


def _formatted(settings: Settings, nodes: int) -> None:
    root = settings.stack_dir / "kafka"
    root.mkdir(parents=True)
    (root / "cluster.json").write_text(f'{{"cluster_id": "x", "nodes": {nodes}, "dir_ids": []}}')


def test_settings_follow_a_three_node_cluster(tmp_path: Path) -> None:
    s = Settings(stack_dir=tmp_path / ".stack", kafka_port_base=29092)
    assert s.kafka_bootstrap == "127.0.0.1:19092"  # nothing set up: the defaults
    _formatted(s, 3)
    s = Settings(stack_dir=tmp_path / ".stack", kafka_port_base=29092)
    assert s.kafka_bootstrap == "127.0.0.1:29092,127.0.0.1:29192,127.0.0.1:29292"
    assert (s.replication_factor, s.min_insync_replicas) == (3, 2)
    explicit = Settings(
        stack_dir=tmp_path / ".stack", kafka_bootstrap="127.0.0.1:29092", replication_factor=1
    )
    assert explicit.kafka_bootstrap == "127.0.0.1:29092" and explicit.replication_factor == 1


def test_disagreements_between_settings_and_cluster_are_named(settings: Settings) -> None:
    from devtools.stack import cluster

    assert cluster.disagreements(settings) == []  # no cluster set up
    _formatted(settings, 3)
    narrow = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:29092", "replication_factor": 1})
    problems = cluster.disagreements(narrow)
    assert any("does not list 127.0.0.1:29192, 127.0.0.1:29292" in p for p in problems)
    assert any("HUB_REPLICATION_FACTOR 1 on a 3-node cluster" in p for p in problems)
    follows = Settings(stack_dir=settings.stack_dir, kafka_port_base=29092)
    assert cluster.disagreements(follows) == []


def test_secure_properties_and_layout(settings: Settings) -> None:
    """``--secure``: SASL_SSL only on the client port, SCRAM users at format, nobody allowed without an ACL;
    a plain set-up is not silently turned secure (or back)."""
    s = security.ensure_secrets(kafka.kafka_root())
    assert set(s.passwords) == set(security.USERS) and len(set(s.passwords.values())) == len(security.USERS)
    assert (s.folder.stat().st_mode & 0o777) == 0o700
    assert ((s.folder / "credentials.json").stat().st_mode & 0o777) == 0o600
    assert security.ensure_secrets(kafka.kafka_root()).passwords == s.passwords  # kept across `up`s
    p = props(kafka._server_properties(1, 1, s))
    assert p["listeners"] == "SASL_SSL://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert "PLAINTEXT:" not in p["listener.security.protocol.map"]
    assert p["authorizer.class.name"].endswith("StandardAuthorizer")
    assert p["allow.everyone.if.no.acl.found"] == "false"
    assert p["super.users"] == "User:admin"
    args = security.format_args(s)
    assert args.count("--add-scram") == len(security.USERS)
    (kafka.kafka_root() / "cluster.json").write_text('{"cluster_id": "x", "nodes": 1, "dir_ids": ["y"]}')
    with pytest.raises(kafka.StackError, match="--secure --recreate"):
        kafka.kafka_start(1, secure=True)


def test_acl_plan_gives_each_service_its_job_only(settings: Settings) -> None:
    plan = security.acl_plan(settings)
    writers = {g.user for g in plan if g.operation == "WRITE" and g.name in settings.event_topics}
    assert writers == {security.RELAY, security.ADAPTER}
    assert not [g for g in plan if g.user == security.CONSOLE and g.operation == "WRITE"]
    # Each consumer may join exactly the groups the runtime's one group-id rule gives it, every role.
    groups = [g for g in plan if g.resource == "group"]
    consumers = (security.EVENT_LOG, security.SHARED_VIEW, security.PLACEMENT_FEED)
    for name in consumers:
        for role in ("live", "replay"):
            group = group_id_for(name, settings, role)
            assert {g.user for g in groups if group.startswith(g.name) and g.pattern == "prefixed"} == {name}
    assert all(g.user != security.ADMIN for g in plan)  # the super user needs none


def test_settings_follow_a_secure_cluster_and_clients_take_them(tmp_path: Path) -> None:
    s = Settings(stack_dir=tmp_path / ".stack", kafka_port_base=29092)
    assert client_options(s) == {"bootstrap_servers": "127.0.0.1:19092", "security_protocol": "PLAINTEXT"}
    root = tmp_path / ".stack" / "kafka"
    secrets = security.ensure_secrets(root)
    (root / "cluster.json").write_text('{"cluster_id": "x", "nodes": 1, "dir_ids": ["y"], "secure": true}')
    s = Settings(stack_dir=tmp_path / ".stack", kafka_port_base=29092)
    assert s.kafka_security_protocol == "SASL_SSL" and s.kafka_ssl_cafile == secrets.cafile
    with pytest.raises(KafkaSecurityMisconfigured, match="HUB_KAFKA_SASL_USERNAME"):
        client_options(s)  # a service must say who it is
    options = client_options(secrets.settings_for(s, security.RELAY))
    assert options["sasl_mechanism"] == "SCRAM-SHA-512" and options["sasl_plain_username"] == "relay"
    assert options["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    assert secrets.passwords[security.RELAY] not in repr(
        secrets.settings_for(s, security.RELAY)
    )  # not logged
