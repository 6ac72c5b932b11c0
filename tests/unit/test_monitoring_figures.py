"""The console's arithmetic and masking, without a broker: lag, rates, headers, reasons, grouping, charts,
sessions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.monitoring import (
    HIDDEN,
    LetterRow,
    OffsetRow,
    PartitionOffsets,
    Sample,
    TopicFigures,
    consumer_lag,
    group_letters,
    mask_reason,
    outbox_row_headers,
    rate_per_second,
    rates_between,
    record_digest,
    redrive_headers,
    safe_headers,
)
from hub.console.session import console_sessions, require_operator
from hub.web.charts import bar_chart, line_chart
from infra.auth import AuthError, OrgKind, Principal, Role
from infra.config import Settings

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def _topic(name: str, ends: list[int], begins: list[int] | None = None) -> TopicFigures:
    begins = begins or [0] * len(ends)
    return TopicFigures(
        name, tuple(PartitionOffsets(i, b, e) for i, (b, e) in enumerate(zip(begins, ends, strict=True)))
    )


def _row(consumer: str, topic: str, partition: int, next_offset: int) -> OffsetRow:
    return OffsetRow(consumer, topic, partition, next_offset, T0, T0 + timedelta(seconds=partition))


class TestConsumerLag:
    def test_lag_is_end_minus_saved_position_per_partition(self) -> None:
        topics = {"ns.registration.v1": _topic("ns.registration.v1", [10, 5, 0])}
        rows = [_row("event-log", "ns.registration.v1", 0, 7), _row("event-log", "ns.registration.v1", 1, 5)]
        (figures,) = consumer_lag(rows, topics)
        assert [(p.partition, p.next_offset, p.end, p.lag) for p in figures.partitions] == [
            (0, 7, 10, 3),
            (1, 5, 5, 0),
            (2, None, 0, 0),
        ]
        assert figures.total_lag == 3
        assert figures.last_processed_at == T0 + timedelta(seconds=1)

    def test_a_partition_never_processed_counts_in_full_from_its_beginning(self) -> None:
        topics = {"ns.consent.v1": _topic("ns.consent.v1", [4, 9], begins=[0, 2])}
        (figures,) = consumer_lag([_row("c", "ns.consent.v1", 0, 4)], topics)
        assert [p.lag for p in figures.partitions] == [0, 7]

    def test_positions_on_other_namespaces_are_ignored(self) -> None:
        topics = {"ns.placement.v1": _topic("ns.placement.v1", [3])}
        rows = [_row("a", "other.placement.v1", 0, 1), _row("b", "ns.placement.v1", 0, 1)]
        assert [c.consumer for c in consumer_lag(rows, topics)] == ["b"]

    def test_a_position_past_the_end_is_no_lag_not_negative(self) -> None:
        topics = {"ns.referral.v1": _topic("ns.referral.v1", [2])}
        (figures,) = consumer_lag([_row("c", "ns.referral.v1", 0, 9)], topics)
        assert figures.total_lag == 0

    def test_a_position_below_the_beginning_counts_from_the_beginning(self) -> None:
        topics = {"ns.referral.v1": _topic("ns.referral.v1", [10], begins=[6])}
        (figures,) = consumer_lag([_row("c", "ns.referral.v1", 0, 2)], topics)
        assert figures.total_lag == 4


class TestRates:
    def test_rate_over_the_window(self) -> None:
        samples = [Sample(T0 + timedelta(seconds=s), n) for s, n in ((0, 0), (30, 300), (60, 900), (90, 900))]
        assert rate_per_second(samples, 60) == pytest.approx(600 / 60)
        assert rate_per_second(samples, 3600) == pytest.approx(900 / 90)

    def test_fewer_than_two_samples_have_no_rate(self) -> None:
        assert rate_per_second([], 60) is None
        assert rate_per_second([Sample(T0, 5)], 60) is None

    def test_a_window_shorter_than_the_sampling_uses_the_last_two(self) -> None:
        samples = [Sample(T0, 0), Sample(T0 + timedelta(seconds=10), 50)]
        assert rate_per_second(samples, 1) == pytest.approx(5.0)

    def test_rates_between_consecutive_samples_never_go_negative(self) -> None:
        samples = [Sample(T0 + timedelta(seconds=s), n) for s, n in ((0, 10), (5, 20), (10, 5))]
        assert rates_between(samples) == [(T0 + timedelta(seconds=5), 2.0), (T0 + timedelta(seconds=10), 0.0)]


class TestMasking:
    def test_only_envelope_headers_of_the_expected_shape_are_shown(self) -> None:
        shown = safe_headers(
            [
                ("ce_id", b"0123456789abcdef0123456789abcdef"),
                ("ce_type", b"jp.ittai.registration.v1"),
                ("ce_source", b"/hellowork/offices/1301"),
                ("ce_subject", b"3f2a9c0d5b1e4f6a8c7d9e0f1a2b3c4d"),
                ("ce_time", b"2025-04-03T10:00:00+09:00"),
                ("dlq_reason", b"whatever"),
                ("x-client-note", "髙橋 花子".encode()),
            ]
        )
        assert shown == {
            "ce_id": "0123456789abcdef0123456789abcdef",
            "ce_type": "jp.ittai.registration.v1",
            "ce_source": "/hellowork/offices/1301",
            "ce_subject": "3f2a9c…",
            "ce_time": "2025-04-03T10:00:00+09:00",
        }

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("ce_source", "/authorities/髙橋 花子"),
            ("ce_source", "髙橋 花子"),
            ("ce_type", "Hanako Takahashi"),
            ("ce_subject", "髙橋 花子"),
            ("ce_time", "1988-06-01 by 花子"),
            ("ce_id", "名前"),
        ],
    )
    def test_an_unexpected_value_is_hidden(self, name: str, value: str) -> None:
        assert safe_headers([(name, value.encode())]) == {name: HIDDEN}

    def test_undecodable_header_is_hidden(self) -> None:
        assert safe_headers([("ce_type", b"\xff\xfe")]) == {"ce_type": HIDDEN}

    def test_echoed_values_are_masked_in_reasons(self) -> None:
        reason = (
            "registration data invalid: office: String should match pattern '^\\d{4}$' (got '髙橋 花子'); "
            "sex: Input should be 'male' (got 'f')"
        )
        masked = mask_reason(reason)
        assert "髙橋" not in masked and "'f'" not in masked
        assert masked.count("(got ‹masked›)") == 2
        assert "office: String should match pattern" in masked
        assert mask_reason("header ce_time: missing") == "header ce_time: missing"

    def test_redrive_drops_only_dead_letter_headers(self) -> None:
        headers = [
            ("ce_id", b"1"),
            ("dlq_reason", b"r"),
            ("content-type", b"application/json"),
            ("dlq_time", b"t"),
        ]
        assert redrive_headers(headers) == [("ce_id", b"1"), ("content-type", b"application/json")]

    def test_a_record_digest_ignores_dead_letter_headers_and_tells_every_part_apart(self) -> None:
        base = record_digest(b"k", [("ce_id", b"1"), ("x", b"ab")], b"v")
        # what the runtime adds around the original headers does not change the record
        assert (
            record_digest(
                b"k", [("dlq_reason", b"r"), ("ce_id", b"1"), ("x", b"ab"), ("dlq_time", b"t")], b"v"
            )
            == base
        )
        others = [
            record_digest(None, [("ce_id", b"1"), ("x", b"ab")], b"v"),  # absent key is not an empty one
            record_digest(b"", [("ce_id", b"1"), ("x", b"ab")], b"v"),
            record_digest(b"k", [("ce_id", b"1"), ("x", b"ab")], None),
            record_digest(b"k", [("ce_id", b"1"), ("xa", b"b")], b"v"),  # bytes moved across a boundary
            record_digest(b"k", [("x", b"ab"), ("ce_id", b"1")], b"v"),  # header order
            record_digest(b"k", [("ce_id", b"2"), ("x", b"ab")], b"v"),
            record_digest(b"kv", [("ce_id", b"1"), ("x", b"ab")], b""),
        ]
        assert len({base, *others}) == len(others) + 1

    def test_a_redrive_goes_through_the_outbox_only_with_headers_it_can_carry(self) -> None:
        good = [("ce_id", b"e-1"), ("dlq_reason", b"r"), ("ce_source", "市".encode())]
        assert outbox_row_headers(good) == {"ce_id": "e-1", "ce_source": "市"}
        refused = {
            "not UTF-8": [("ce_id", b"e-1"), ("x", b"\xff\xfe")],
            "NUL": [("ce_id", b"e-1"), ("x", b"a\x00b")],
            "repeats": [("ce_id", b"e-1"), ("ce_id", b"e-2")],
            "no ce_id": [("content-type", b"application/json")],
        }
        for why, headers in refused.items():
            reason = outbox_row_headers(headers)
            assert isinstance(reason, str) and why in reason, (why, reason)
            assert "\xff" not in reason and "e-2" not in reason  # nothing a client sent is echoed


class TestGrouping:
    def _letter(self, id: int, consumer: str, offset: int, minutes: int, located: bool = True) -> LetterRow:
        return LetterRow(
            id=id,
            consumer=consumer,
            source_topic="ns.registration.v1",
            source_partition=0,
            source_offset=offset,
            reason=f"{consumer}: rejected (got 'x')",
            dead_lettered_at=T0 + timedelta(minutes=minutes),
            located=located,
            headers={"ce_id": f"id{offset}"} if located else {},
        )

    def test_one_group_per_source_record_newest_first(self) -> None:
        groups = group_letters(
            [
                self._letter(1, "event-log", 5, 0),
                self._letter(2, "shared-view", 5, 1, located=False),
                self._letter(3, "event-log", 6, 2),
            ]
        )
        assert [(g.id, g.source_offset, g.consumers, g.register_ids) for g in groups] == [
            (3, 6, ("event-log",), (3,)),
            (1, 5, ("event-log", "shared-view"), (1, 2)),
        ]
        assert groups[1].located and groups[1].headers == {"ce_id": "id5"}
        assert groups[1].reasons == (
            "event-log: rejected (got ‹masked›)",
            "shared-view: rejected (got ‹masked›)",
        )


class TestCharts:
    def test_line_chart_draws_the_series_and_labels_the_latest_value(self) -> None:
        svg = line_chart([(T0, 0.0), (T0 + timedelta(minutes=1), 1234.0)], title="end offset", unit="records")
        assert "<polyline" in svg and "1,234 records" in svg and "min 0" in svg

    def test_line_chart_waits_for_two_samples(self) -> None:
        assert "waiting for samples" in line_chart([(T0, 1.0)], title="rate", unit="events/s")

    def test_bar_chart_escapes_labels_and_writes_values(self) -> None:
        svg = bar_chart([("<p0>", 3.0), ("p1", 0.0)], title="lag")
        assert "&lt;p0&gt;" in svg and ">3<" in svg and ">0<" in svg


class TestSessions:
    def test_a_session_round_trips_and_a_tampered_one_does_not(self) -> None:
        sessions = console_sessions(Settings(console_session_secret="s1"))
        cookie, issued = sessions.issue("abc")
        assert sessions.read(cookie) == issued
        assert sessions.read(cookie[:-2] + "xx") is None
        assert sessions.read(None) is None
        assert console_sessions(Settings(console_session_secret="s2")).read(cookie) is None

    def test_an_expired_session_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        sessions = console_sessions(Settings(console_session_secret="s1", console_session_max_age_s=60))
        cookie, _ = sessions.issue("abc")
        import time as time_module

        real = time_module.time
        monkeypatch.setattr(time_module, "time", lambda: real() + 3600)
        assert sessions.read(cookie) is None

    @pytest.mark.parametrize(
        ("kind", "roles", "expected"),
        [
            (OrgKind.AUTHORITY, {Role.OPERATE}, "belongs to authority:131041"),
            (OrgKind.OFFICE, {Role.READ}, "belongs to office:131041"),
            (OrgKind.HELLO_WORK_NATIONAL, {Role.READ}, "belongs to hello_work_national:131041"),
            (OrgKind.OPERATOR, {Role.READ}, "lacks role 'operate'"),
        ],
    )
    def test_only_operators_with_the_operate_role_pass(
        self, kind: OrgKind, roles: set[Role], expected: str
    ) -> None:
        with pytest.raises(AuthError) as err:
            require_operator(Principal("c1", "x", kind, "131041", frozenset(roles)))
        assert err.value.status == 403 and expected in err.value.reason
        require_operator(Principal("c2", "ops", OrgKind.OPERATOR, "*", frozenset({Role.OPERATE})))
