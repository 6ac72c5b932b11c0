"""``builder._Horizon.plus``: a horizon's counts are its shares summed (``_count``). Where only one share
counts a feed's combinations, the sum holds that share's counter itself (a national build's two horizons
share most rows); the sums must be what adding copies gives, neither share changed, and the team counts,
which ``_count`` adds to after summing, never one share's own."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from consumers.feed.builder import _Horizon
from domain.feed import RETENTION_CHECKPOINTS

AUTHORITIES = st.sampled_from(("131041", "131059", "271004"))
KEY = st.tuples(st.sampled_from(("131041-01", "131059-01", "other")), st.sampled_from(("a", "b", "c")))
COUNTS = st.dictionaries(AUTHORITIES, st.dictionaries(KEY, st.integers(1, 9), max_size=4), max_size=3)


@st.composite
def horizons(draw: st.DrawFn) -> _Horizon:
    h = _Horizon()
    for name in ("referral", "self_found", "new", "team"):
        for a, counts in draw(COUNTS).items():
            getattr(h, name)[a].update(counts)
    for a, counts in draw(COUNTS).items():
        h.retention[a][draw(st.sampled_from(RETENTION_CHECKPOINTS))].update(counts)
    for a in draw(st.lists(AUTHORITIES, max_size=3)):
        h.ids[a].append(f"p-{a}")
    return h


def _plain(h: _Horizon) -> dict[str, object]:
    return {
        name: {a: dict(c) for a, c in getattr(h, name).items() if c}
        for name in ("referral", "self_found", "new", "team")
    } | {
        "retention": {a: {k: dict(c) for k, c in ks.items() if c} for a, ks in h.retention.items()},
        "ids": {a: list(v) for a, v in h.ids.items()},
    }


@given(horizons(), horizons())
def test_a_sum_of_shares_is_their_counts_added_and_changes_neither(both: _Horizon, late: _Horizon) -> None:
    before = (_plain(both), _plain(late))
    out = both.plus(late)
    assert (_plain(both), _plain(late)) == before
    for name in ("referral", "self_found", "new", "team"):
        mine, theirs = getattr(both, name), getattr(late, name)
        for a in mine.keys() | theirs.keys():
            expected = Counter(mine.get(a, {}))
            expected.update(theirs.get(a, {}))
            assert dict(getattr(out, name)[a]) == dict(expected), (name, a)
            assert list(getattr(out, name)[a]) == list(expected), (name, a)  # a's order, then late's keys
    for a in both.retention.keys() | late.retention.keys():
        for k in RETENTION_CHECKPOINTS:
            expected = Counter(both.retention.get(a, {}).get(k, {}))
            expected.update(late.retention.get(a, {}).get(k, {}))
            assert dict(out.retention[a][k]) == dict(expected)
    for a in both.ids.keys() | late.ids.keys():
        assert out.ids[a] == both.ids.get(a, []) + late.ids.get(a, [])
    # ``_count`` adds the team enrolments to each sum: never to a share's counter, nor to the other sum's
    other = both.plus(late)
    for a in out.team:
        out.team[a][("added", "x")] += 1
    assert (_plain(both), _plain(late)) == before
    assert all(("added", "x") not in c for c in other.team.values())
