"""The individual list's retention checkpoint is said in the page's language (it was English on the
Japanese page: "1m employed (2023-03-06)")."""

from __future__ import annotations

from hub.portal.view import retention_label
from hub.web import i18n


def test_a_checkpoint_in_japanese_with_the_wareki_date() -> None:
    i18n.use("ja")
    assert retention_label("1m employed (2023-03-06)") == "1か月確認：就労継続（令和5年3月6日）"
    assert retention_label("6m left (2024-01-31)") == "6か月確認：離職（令和6年1月31日）"
    assert retention_label(None) == "－"


def test_a_checkpoint_in_english() -> None:
    i18n.use("en")
    try:
        assert retention_label("3m employed (2023-05-01)") == "3-month check: still employed (2023-05-01)"
    finally:
        i18n.use("ja")


def test_a_form_the_page_does_not_know_is_shown_as_the_feed_has_it() -> None:
    i18n.use("ja")
    assert retention_label("2m employed (2023-05-01)") == "2m employed (2023-05-01)"
