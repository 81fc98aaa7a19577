"""Sentiment scoring: lexicon tables, negation, intensifiers, weighting, confidence, decay."""

from __future__ import annotations

import ast
import math
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain import sentiment_scoring as ss

NOW = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
POS, NEG, ZERO = 1, -1, 0

# (headline, expected sign, min |score|, max |score|)
HEADLINES = [
    # earnings beats and misses
    ("CBA beats profit forecast", POS, 0.5, 0.8),
    ("Westpac misses earnings expectations", NEG, 0.5, 0.8),
    ("NAB first-half profit falls 8%", NEG, 0.5, 0.8),  # "first"/"half" are fillers: "profit falls"
    ("ANZ posts record profit and lifts dividend", POS, 0.8, 0.95),
    ("CBA results better than expected", POS, 0.5, 0.8),
    ("Westpac issues profit warning", NEG, 0.6, 0.9),
    # broker calls
    ("Morgan Stanley upgrades NAB to overweight", POS, 0.7, 0.9),
    ("Citi downgrades CBA to underperform", NEG, 0.7, 0.9),
    ("Macquarie cuts price target on Westpac", NEG, 0.4, 0.7),
    # capital management
    ("ANZ announces $2bn share buy-back", POS, 0.5, 0.8),  # hyphenated form
    ("CBA cuts its interim dividend", NEG, 0.6, 0.8),  # filler words between verb and object
    ("NAB declares special dividend", POS, 0.5, 0.8),
    ("NAB raises capital in $3bn placement", NEG, 0.6, 0.9),
    ("ANZ launches entitlement offer to fund acquisition", NEG, 0.3, 0.6),
    # regulators, courts
    ("ASIC sues Westpac over fees", NEG, 0.6, 0.8),
    ("AUSTRAC launches money laundering case against CBA", NEG, 0.7, 0.9),
    ("APRA imposes capital overlay on ANZ", NEG, 0.5, 0.8),
    ("Class action filed against NAB", NEG, 0.5, 0.8),
    ("CBA fined $50m by Federal Court", NEG, 0.5, 0.8),
    # operations
    ("Westpac hit by nationwide banking outage", NEG, 0.5, 0.8),
    ("NAB customers locked out after cyber attack", NEG, 0.6, 0.8),
    # rates: deliberately mild for banks
    ("RBA cuts rates", POS, 0.2, 0.4),
    ("RBA hikes rates again", NEG, 0.2, 0.4),
    # moves and modifiers
    ("Bank shares fall sharply", NEG, 0.4, 0.6),  # post-positioned adverb boosts "fall"
    ("CBA shares slightly lower", NEG, 0.1, 0.25),  # dampener
    # negation
    ("NAB fails to beat forecasts", NEG, 0.4, 0.7),
    ("Westpac isn't profitable", NEG, 0.2, 0.5),
    ("ANZ not expected to cut dividend", POS, 0.4, 0.7),  # a denied bad thing reads as relief
    ("No fine for ANZ as ASIC clears bank", POS, 0.5, 0.8),
    ("CBA will pay no dividend this year", NEG, 0.5, 0.8),  # "no dividend" is its own phrase
    # mixed news
    ("Westpac beats forecasts and faces ASIC lawsuit", NEG, 0.0, 0.25),  # near balance
    ("CBA profit rises despite bad debts", POS, 0.3, 0.6),  # concession clause discounted
    ("CBA beats forecast but ASIC sues over fees", NEG, 0.5, 0.8),  # after "but" dominates
    # no signal
    ("CBA to hold annual general meeting in Sydney", ZERO, 0.0, 0.0),
    ("", ZERO, 0.0, 0.0),
]


@pytest.mark.parametrize(("headline", "sign", "lo", "hi"), HEADLINES)
def test_headline_sign_and_size(headline: str, sign: int, lo: float, hi: float) -> None:
    score = ss.score_text(headline).score
    if sign == ZERO:
        assert score == 0.0
    else:
        assert math.copysign(1, score) == sign and score != 0.0, score
    assert lo <= abs(score) <= hi, score


@pytest.mark.parametrize(
    ("plain", "negated"),
    [
        ("CBA beats forecasts", "CBA fails to beat forecasts"),
        ("NAB is profitable", "NAB is not profitable"),
        ("ANZ cleared of wrongdoing", "ANZ never cleared of wrongdoing"),
        ("Westpac results strong", "Westpac results unable to stay strong"),
        ("Growth in lending", "No growth in lending"),
    ],
)
def test_negation_flips_and_shrinks(plain: str, negated: str) -> None:
    a, b = ss.score_text(plain).raw, ss.score_text(negated).raw
    assert a > 0 > b
    assert abs(b) < abs(a)


def test_negation_scope_is_bounded_and_ends_at_punctuation() -> None:
    # 4 non-filler tokens between "not" and "strong": out of scope.
    assert ss.score_text("not that anyone said results were strong").raw > 0
    assert ss.score_text("Not surprising. Results strong").raw > 0


@pytest.mark.parametrize(
    ("base", "modified", "factor"),
    [
        ("profit falls", "profit falls sharply", 1.5),
        ("CBA shares rise", "CBA shares rise slightly", 0.5),
        ("NAB shares fall", "NAB shares fall heavily", 1.5),
        ("growth", "modest growth", 0.5),
        ("outage", "major outage", 1.5),
    ],
)
def test_intensifiers_scale_the_hit(base: str, modified: str, factor: float) -> None:
    assert ss.score_text(modified).raw == pytest.approx(ss.score_text(base).raw * factor)


def test_contrast_shifts_weight_to_the_second_clause() -> None:
    both = ss.score_text("profit beats forecast, but dividend cut")
    assert [round(h.contribution, 3) for h in both.hits] == [0.25, 1.25, -4.5]


def test_article_title_outweighs_body() -> None:
    good_title = ss.score_article("CBA beats forecasts", "Shares fell in early trade")
    good_body = ss.score_article("Shares fell in early trade", "CBA beats forecasts")
    assert good_title.score > good_body.score > 0


@pytest.mark.parametrize(
    ("title", "entity", "expected"),
    [
        ("CBA beats forecasts", None, ss.normalise(1.5 * 2.5)),  # lexicon only
        ("CBA holds AGM", -0.4, -0.4),  # entity only: no lexicon word
        ("CBA holds AGM", None, 0.0),  # nothing at all
        ("CBA beats forecasts", -0.4, 0.5 * ss.normalise(1.5 * 2.5) + 0.5 * -0.4),  # blend
        ("CBA holds AGM", 3.0, 1.0),  # out-of-range entity sentiment is clamped
    ],
)
def test_article_blends_entity_sentiment(title: str, entity: float | None, expected: float) -> None:
    assert ss.score_article(title, "", entity).score == pytest.approx(expected)


@pytest.mark.parametrize(
    ("age_h", "expected"),
    [(0, 1.0), (24, 0.5), (48, 0.25), (-5, 1.0)],  # -5: dated in the future (clock skew) counts fresh
)
def test_recency_half_life(age_h: float, expected: float) -> None:
    assert ss.recency_weight(NOW - timedelta(hours=age_h), NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("afr.com", 1.0),
        ("www.afr.com", 1.0),
        ("markets.businessinsider.com", ss.UNKNOWN_SOURCE_QUALITY),
        ("au.finance.yahoo.com", 0.7),  # subdomain of a listed domain
        ("FOOL.COM.AU", 0.6),
        ("", ss.UNKNOWN_SOURCE_QUALITY),
    ],
)
def test_source_quality(domain: str, expected: float) -> None:
    assert ss.source_quality(domain) == expected


@pytest.mark.parametrize(
    ("match", "expected"),
    [(None, 0.5), (0.0, 0.0), (10.0, 0.5), (30.0, 0.75), (-3.0, 0.0), (float("nan"), 0.5)],
)
def test_match_weight(match: float | None, expected: float) -> None:
    assert ss.match_weight(match) == pytest.approx(expected)


def _item(uuid: str, title: str, *, age_h: float = 1, source: str = "afr.com", **kw: object) -> ss.NewsItem:
    return ss.NewsItem(
        uuid=uuid,
        title=title,
        body="",
        source=source,
        url=f"https://{source}/{uuid}",
        published_at=NOW - timedelta(hours=age_h),
        match_score=kw.pop("match_score", 20.0),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def test_summary_weights_recent_quality_and_relevant_news_more() -> None:
    fresh_good = _item("a", "CBA beats forecasts")
    stale_bad = _item("b", "CBA misses forecasts", age_h=72)
    assert ss.summarise([fresh_good, stale_bad], NOW).score > 0
    weak_source_good = _item("c", "CBA beats forecasts", source="unknown.blog")
    strong_source_bad = _item("d", "CBA misses forecasts")
    assert ss.summarise([weak_source_good, strong_source_bad], NOW).score < 0
    passing_mention_good = _item("e", "CBA beats forecasts", match_score=1.0)
    assert ss.summarise([passing_mention_good, strong_source_bad], NOW).score < 0


def test_summary_counts_neutral_news_without_diluting_score() -> None:
    s = ss.summarise([_item("a", "CBA beats forecasts"), _item("b", "CBA holds AGM")], NOW)
    assert s.news_count == 2 and s.signal_count == 1
    assert s.score == pytest.approx(ss.score_article("CBA beats forecasts", "").score)
    assert s.items[0].item.uuid == "a"  # most influential first


def test_summary_ignores_news_dated_after_now() -> None:
    # A replay at an earlier suite time must not see articles published later.
    s = ss.summarise([_item("past", "CBA beats forecasts"), _item("future", "CBA misses", age_h=-2)], NOW)
    assert s.news_count == 1 and [i.item.uuid for i in s.items] == ["past"] and s.score > 0


def test_summary_of_nothing_is_neutral_with_zero_confidence() -> None:
    s = ss.summarise([], NOW)
    assert (s.score, s.confidence, s.news_count) == (0.0, 0.0, 0)


def test_confidence_grows_with_volume_and_agreement() -> None:
    one = ss.summarise([_item("a", "CBA beats forecasts")], NOW).confidence
    three = ss.summarise([_item(str(i), "CBA beats forecasts") for i in range(3)], NOW).confidence
    mixed = ss.summarise(
        [_item("a", "CBA beats forecasts"), _item("b", "CBA misses forecasts"), _item("c", "CBA beats")], NOW
    ).confidence
    assert 0 < one < three < 1
    assert mixed < three  # same volume, less agreement
    assert ss.confidence([1.0, 1.0], [0.5, -0.5]) == pytest.approx(
        (1 - math.exp(-2 / ss.VOLUME_SCALE)) * (1 - ss.AGREEMENT_SHARE)
    )


@pytest.mark.parametrize(
    ("age_h", "expected"),
    [(0, (0.6, 0.8)), (12, (0.3, 0.4)), (24, (0.15, 0.2)), (-1, (0.6, 0.8))],
)
def test_decay_toward_neutral(age_h: float, expected: tuple[float, float]) -> None:
    score, conf = ss.decay_toward_neutral(0.6, 0.8, age_h * 3600)
    assert (score, conf) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ([], (0.0, 0.0)),
        ([(0.5, 0.0), (-0.5, 0.0)], (0.0, 0.0)),  # no confidence anywhere: neutral, not an average
        ([(0.4, 0.5), (0.4, 0.5)], (0.4, 0.5)),
        ([(0.8, 0.6), (0.0, 0.0)], (0.8, 0.3)),  # a bank with no news halves the mean confidence
        ([(0.5, 0.5), (-0.5, 0.5)], (0.0, 0.5 * (1 - ss.AGREEMENT_SHARE))),  # disagreement
    ],
)
def test_combine(parts: list[tuple[float, float]], expected: tuple[float, float]) -> None:
    assert ss.combine(parts) == pytest.approx(expected)


@given(st.text(max_size=300))
def test_score_text_is_always_inside_minus_one_one(text: str) -> None:
    assert -1.0 < ss.score_text(text).score < 1.0


_words = st.lists(
    st.sampled_from([*ss.LEXICON, *ss.NEGATORS, *ss.INTENSIFIERS, "but", ",", "CBA"]), max_size=30
)


@given(_words, st.floats(-5, 5), st.floats(0, 200))
def test_summary_invariants(words: list[str], entity: float, match: float) -> None:
    items = [_item(str(i), " ".join(words[i:]), entity_sentiment=entity, match_score=match) for i in range(3)]
    s = ss.summarise(items, NOW)
    assert -1.0 <= s.score <= 1.0
    assert 0.0 <= s.confidence <= 1.0


@given(st.floats(-1, 1), st.floats(0, 1), st.floats(0, 1e7), st.floats(0, 1e7))
def test_decay_never_grows_and_is_monotone(score: float, conf: float, a: float, b: float) -> None:
    s1, c1 = ss.decay_toward_neutral(score, conf, min(a, b))
    s2, c2 = ss.decay_toward_neutral(score, conf, max(a, b))
    assert abs(s2) <= abs(s1) <= abs(score) and c2 <= c1 <= conf


def test_domain_module_imports_only_stdlib() -> None:
    tree = ast.parse(Path(ss.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names
