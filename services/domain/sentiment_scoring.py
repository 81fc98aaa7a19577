"""News sentiment scoring: pure functions, no I/O, no clock reads (callers pass `now`).

Pipeline, per symbol:
1. `score_text` turns a headline or body into a score in -1..+1 with a finance lexicon, negation
   ("not", "no", "fails to"), intensifiers ("sharply", "record"), dampeners ("slightly") and
   contrast ("but" shifts weight to what follows, "despite" discounts its clause).
2. `score_article` weighs the title above the body and blends in MarketAux's own entity
   sentiment when the article has one for the symbol.
3. `summarise` takes the weighted mean over articles, each weighted by recency (half-life),
   source quality and how strongly the article is about the symbol (MarketAux match score), and
   derives a confidence from news volume and agreement.
4. `decay_toward_neutral` ages a stored score toward 0 for honest fallbacks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

# Raw lexicon weights live on a -4..+4 scale; `normalise` squashes sums into -1..+1 the way
# VADER does (x / sqrt(x² + alpha)), so one strong word gives about ±0.6 and piling on more
# evidence approaches ±1 without ever reaching it.
NORMALISE_ALPHA = 10.0
# How much a negator flips and shrinks a hit: "not strong" is weaker than "weak" (VADER uses 0.74).
NEGATION_FACTOR = -0.75
# Negators and intensifiers reach this many tokens ahead (fillers such as "its" do not count).
NEGATION_SCOPE_TOKENS = 3
INTENSIFIER_SCOPE_TOKENS = 2
# "A but B": the clause after the contrast carries the news (VADER's rule).
CONTRAST_BEFORE_FACTOR = 0.5
CONTRAST_AFTER_FACTOR = 1.5
# "despite X" / "although X": X is background, not the news.
CONCESSION_FACTOR = 0.5
# Headlines are written to carry the news; bodies repeat and hedge.
TITLE_WEIGHT = 1.5
# Share of MarketAux's entity sentiment in an article's score when the lexicon also has a signal.
ENTITY_SENTIMENT_WEIGHT = 0.5
RECENCY_HALF_LIFE_H = 24.0
# A match score of this size counts half as much as a perfectly targeted article.
MATCH_SCORE_HALF = 10.0
UNKNOWN_MATCH_WEIGHT = 0.5
UNKNOWN_SOURCE_QUALITY = 0.5
# Confidence reaches 63% of its volume term with this much effective (weighted) news.
VOLUME_SCALE = 2.0
# Share of confidence that needs agreement; the rest comes from volume alone.
AGREEMENT_SHARE = 0.75
FALLBACK_HALF_LIFE_H = 12.0

# fmt: off
# Scored from an equity holder's point of view. Rate moves get small weights because for banks
# they cut both ways (margins vs bad debts). Keys are space-separated lowercase token phrases.
LEXICON: dict[str, float] = {
    # earnings, guidance
    "beat": 2.5, "beats": 2.5, "beating": 2.5, "tops": 2.0, "topped": 2.0, "exceeds": 2.0,
    "exceeded": 2.0, "surpasses": 2.0, "surpassed": 2.0, "above expectations": 2.5,
    "ahead of expectations": 2.5, "better than expected": 2.5, "miss": -2.5, "misses": -2.5,
    "missed": -2.5, "shortfall": -2.0, "below expectations": -2.5, "worse than expected": -2.5,
    "profit": 0.5, "profits": 0.5, "profitable": 1.5, "loss": -2.0, "losses": -2.0, "profit rises": 2.5,
    "profit rose": 2.5, "profit jumps": 2.5, "profit jumped": 2.5, "profit climbs": 2.5,
    "profit grows": 2.5, "profit surges": 3.0, "profit soars": 3.0, "profit falls": -2.5,
    "profit fell": -2.5, "profit drops": -2.5, "profit dropped": -2.5, "profit slumps": -3.0,
    "profit declines": -2.5, "profit slides": -2.5, "record profit": 3.0, "record loss": -3.0,
    "profit warning": -3.0, "profit downgrade": -3.0, "raises guidance": 2.5, "lifts guidance": 2.5,
    "upgrades guidance": 2.5, "cuts guidance": -2.5, "lowers guidance": -2.5, "guidance cut": -2.5,
    "writedown": -2.5, "write down": -2.5, "impairment": -2.0, "impairments": -2.0, "bad debts": -2.0,
    "arrears": -1.5, "margin squeeze": -2.0, "margin pressure": -2.0, "margin expansion": 2.0,
    "margins expand": 2.0,
    # broker calls
    "upgrade": 2.5, "upgrades": 2.5, "upgraded": 2.5, "downgrade": -2.5, "downgrades": -2.5,
    "downgraded": -2.5, "outperform": 2.0, "underperform": -2.0, "overweight": 1.5, "underweight": -1.5,
    "buy rating": 2.0, "sell rating": -2.0, "raises price target": 2.0, "lifts price target": 2.0,
    "price target raised": 2.0, "cuts price target": -2.0, "lowers price target": -2.0,
    "price target cut": -2.0,
    # capital management
    "buyback": 2.0, "buybacks": 2.0, "buy back": 2.0, "share buyback": 2.5, "share buy back": 2.5,
    "dividend": 0.5, "dividends": 0.5, "special dividend": 2.5, "raises dividend": 2.5,
    "lifts dividend": 2.5, "increases dividend": 2.5, "dividend increase": 2.5, "dividend hike": 2.5,
    "higher dividend": 2.0, "cuts dividend": -3.0, "cut dividend": -3.0, "slashes dividend": -3.5,
    "dividend cut": -3.0, "no dividend": -2.5, "suspends dividend": -3.0, "lower dividend": -2.0,
    "capital raising": -2.0, "raises capital": -2.0, "raise capital": -2.0, "equity raising": -2.0,
    "placement": -1.5, "entitlement offer": -1.5, "rights issue": -1.5, "dilution": -2.0,
    "dilutive": -2.0,
    # regulators, courts, conduct
    "asic": -0.5, "apra": -0.5, "austrac": -1.0, "accc": -0.5, "lawsuit": -2.5, "lawsuits": -2.5,
    "sues": -2.5, "sued": -2.5, "class action": -2.5, "court action": -2.0, "penalty": -2.5,
    "civil penalty": -3.0, "fine": -2.0, "fined": -2.5, "penalised": -2.5, "penalized": -2.5,
    "enforcement": -2.0, "enforceable undertaking": -2.0, "investigation": -2.0, "probe": -2.0,
    "breach": -2.0, "breaches": -2.0, "misconduct": -2.5, "money laundering": -3.0, "scandal": -3.0,
    "remediation": -1.5, "capital overlay": -2.0, "cleared": 2.0, "clears": 2.0, "approval": 1.5,
    "approved": 1.5,
    # operations
    "outage": -2.5, "outages": -2.5, "glitch": -2.0, "disruption": -2.0, "offline": -1.5,
    "cyber attack": -3.0, "cyberattack": -3.0, "data breach": -3.0, "hack": -2.5, "hacked": -2.5,
    "restored": 1.0,
    # rates
    "rate cut": 1.0, "rate cuts": 1.0, "cuts rates": 1.0, "cut rates": 1.0, "rate hike": -1.0,
    "rate hikes": -1.0, "raises rates": -1.0, "hikes rates": -1.0, "rate rise": -1.0,
    "rate rises": -1.0,
    # price moves and tone
    "surge": 2.0, "surges": 2.0, "surged": 2.0, "soar": 2.5, "soars": 2.5, "soared": 2.5, "jump": 1.5,
    "jumps": 1.5, "jumped": 1.5, "rally": 1.5, "rallies": 1.5, "rallied": 1.5, "rise": 1.0,
    "rises": 1.0, "rose": 1.0, "gain": 1.0, "gains": 1.0, "gained": 1.0, "climb": 1.0, "climbs": 1.0,
    "climbed": 1.0, "higher": 1.0, "lower": -1.0, "strong": 1.5, "stronger": 1.5, "growth": 1.0,
    "record high": 2.5, "optimistic": 1.5, "confident": 1.5, "plunge": -2.5, "plunges": -2.5,
    "plunged": -2.5, "slump": -2.5, "slumps": -2.5, "slumped": -2.5, "tumble": -2.0, "tumbles": -2.0,
    "tumbled": -2.0, "fall": -1.0, "falls": -1.0, "fell": -1.0, "drop": -1.0, "drops": -1.0,
    "dropped": -1.0, "decline": -1.0, "declines": -1.0, "declined": -1.0, "slide": -1.5, "slides": -1.5,
    "sink": -2.0, "sinks": -2.0, "sank": -2.0, "crash": -3.0, "weak": -1.5, "weaker": -1.5,
    "warns": -1.5, "warning": -1.5, "concern": -1.0, "concerns": -1.0, "pessimistic": -1.5,
}

NEGATORS: frozenset[str] = frozenset({
    "not", "no", "never", "without", "cannot", "neither", "nor", "none", "fails to", "fail to",
    "failed to", "unable to", "rules out", "ruled out", "denies", "denied",
})
# Multipliers for the next hit: boosters above 1, dampeners below.
INTENSIFIERS: dict[str, float] = {
    "sharply": 1.5, "significantly": 1.5, "strongly": 1.5, "heavily": 1.5, "substantially": 1.5,
    "massive": 1.5, "huge": 1.5, "major": 1.5, "record": 1.5, "steep": 1.5, "sharp": 1.5, "big": 1.3,
    "very": 1.3, "deeply": 1.5, "hefty": 1.5, "extremely": 1.5, "slightly": 0.5, "marginally": 0.5,
    "modest": 0.5, "modestly": 0.5, "small": 0.5, "minor": 0.5, "somewhat": 0.6, "slight": 0.5,
    "mildly": 0.6,
}
CONTRASTS: frozenset[str] = frozenset({"but", "however", "yet"})
CONCESSIONS: frozenset[str] = frozenset({"despite", "although", "though", "notwithstanding"})
# Words skipped when matching phrases and counting scopes: "cuts its interim dividend" must
# match "cuts dividend", and "not the strong" is still negated.
FILLERS: frozenset[str] = frozenset({
    "its", "their", "the", "a", "an", "interim", "final", "full", "year", "half", "annual", "quarterly",
    "first", "second", "fy", "h1", "h2", "bank's", "group's", "company's",
})
# Editorial standard of the outlet; unknown domains get UNKNOWN_SOURCE_QUALITY.
SOURCE_QUALITY: dict[str, float] = {
    "reuters.com": 1.0, "bloomberg.com": 1.0, "afr.com": 1.0, "asx.com.au": 1.0, "wsj.com": 1.0,
    "ft.com": 1.0, "abc.net.au": 0.9, "smh.com.au": 0.9, "theaustralian.com.au": 0.9,
    "theage.com.au": 0.9, "marketindex.com.au": 0.8, "cnbc.com": 0.8, "marketwatch.com": 0.8,
    "finance.yahoo.com": 0.7, "investing.com": 0.7, "fool.com.au": 0.6, "fool.com": 0.6,
    "seekingalpha.com": 0.6, "benzinga.com": 0.6, "proactiveinvestors.com.au": 0.5,
}
# fmt: on


_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)*|[.;:!?,]")
_CLAUSE_END = frozenset({".", ";", ":", "!", "?", ","})
_NEGATOR_PHRASES = {tuple(p.split()) for p in NEGATORS}
_LEXICON_PHRASES = {tuple(p.split()): w for p, w in LEXICON.items()}
_MAX_PHRASE_TOKENS = max(len(p) for p in [*_LEXICON_PHRASES, *_NEGATOR_PHRASES])


@dataclass(frozen=True, slots=True)
class Hit:
    """One lexicon phrase found in a text and what it contributed after the modifiers."""

    phrase: str
    base_weight: float
    contribution: float
    negated: bool
    intensity: float


@dataclass(frozen=True, slots=True)
class TextScore:
    score: float  # -1..+1
    raw: float  # sum of contributions before normalising
    hits: tuple[Hit, ...]

    @property
    def has_signal(self) -> bool:
        return bool(self.hits) and self.raw != 0.0


@dataclass(frozen=True, slots=True)
class ArticleScore:
    score: float  # -1..+1, the blend
    lexicon_score: float | None  # None when no lexicon word matched
    entity_sentiment: float | None  # MarketAux's own, when it had one
    hits: tuple[Hit, ...]

    @property
    def has_signal(self) -> bool:
        return self.lexicon_score is not None or self.entity_sentiment is not None


@dataclass(frozen=True, slots=True)
class NewsItem:
    """An article as far as one symbol is concerned (the service builds these from MarketAux)."""

    uuid: str
    title: str
    body: str
    source: str
    url: str
    published_at: datetime
    entity_sentiment: float | None = None
    match_score: float | None = None


@dataclass(frozen=True, slots=True)
class ScoredItem:
    item: NewsItem
    article: ArticleScore
    weight: float  # recency x source quality x match weight, 0..1


@dataclass(frozen=True, slots=True)
class SentimentSummary:
    score: float  # -1..+1
    confidence: float  # 0..1
    news_count: int
    signal_count: int  # articles that carried any sentiment signal
    items: tuple[ScoredItem, ...] = field(default_factory=tuple)  # most influential first


def normalise(raw: float, alpha: float = NORMALISE_ALPHA) -> float:
    """Squash an unbounded sum into -1..+1 (strictly inside for finite input)."""
    return raw / math.sqrt(raw * raw + alpha)


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens plus clause punctuation; hyphens split ("buy-back" -> buy back)."""
    text = text.lower().replace("\u2019", "'").replace("-", " ")
    return [t for t in _TOKEN_RE.findall(text) if t not in FILLERS]


def _match_at(tokens: Sequence[str], i: int) -> tuple[str, int] | None:
    """Longest lexicon or negator phrase starting at i: (kind, length); lexicon wins ties so
    "no dividend" is one negative phrase, not a negated "dividend"."""
    for n in range(min(_MAX_PHRASE_TOKENS, len(tokens) - i), 0, -1):
        phrase = tuple(tokens[i : i + n])
        if phrase in _LEXICON_PHRASES:
            return "lexicon", n
        if phrase in _NEGATOR_PHRASES:
            return "negator", n
    token = tokens[i]
    if token.endswith("n't"):
        return "negator", 1
    return None


@dataclass(slots=True)
class _Modifiers:
    """Scope state while walking a text left to right."""

    negate_left: int = 0
    intensity: float = 1.0
    intensity_left: int = 0
    concession: bool = False

    def clause_end(self) -> None:
        self.negate_left = self.intensity_left = 0
        self.concession = False

    def step(self) -> None:
        self.negate_left = max(0, self.negate_left - 1)
        self.intensity_left = max(0, self.intensity_left - 1)


def _hit(phrase: tuple[str, ...], mods: _Modifiers, after_contrast: bool) -> Hit:
    base = _LEXICON_PHRASES[phrase]
    negated = mods.negate_left > 0
    intensity = mods.intensity if mods.intensity_left > 0 else 1.0
    value = base * intensity * (NEGATION_FACTOR if negated else 1.0)
    if mods.concession:
        value *= CONCESSION_FACTOR
    if after_contrast:
        value *= CONTRAST_AFTER_FACTOR
    mods.negate_left = mods.intensity_left = 0
    return Hit(" ".join(phrase), base, value, negated, intensity)


def score_text(text: str) -> TextScore:
    """Score one text in -1..+1; see the module doc for the rules."""
    tokens = tokenize(text)
    mods = _Modifiers()
    hits: list[Hit] = []
    after_contrast = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        match = _match_at(tokens, i)
        if match and match[0] == "lexicon":
            hits.append(_hit(tuple(tokens[i : i + match[1]]), mods, after_contrast))
            i += match[1]
            continue
        if match:
            mods.negate_left = NEGATION_SCOPE_TOKENS + 1  # +1: step() below runs for the negator
            i += match[1] - 1
        elif token in _CLAUSE_END:
            mods.clause_end()
        elif token in INTENSIFIERS and not _post_intensify(hits, tokens, i):
            mods.intensity, mods.intensity_left = INTENSIFIERS[token], INTENSIFIER_SCOPE_TOKENS + 1
        elif token in CONTRASTS and not after_contrast:
            # Only the first contrast reweighs: "A but B but C" must not shrink A twice.
            hits = [_scaled(h, CONTRAST_BEFORE_FACTOR) for h in hits]
            after_contrast = True
        elif token in CONCESSIONS:
            mods.concession = True
        mods.step()
        i += 1
    raw = sum(h.contribution for h in hits)
    return TextScore(normalise(raw), raw, tuple(hits))


def _post_intensify(hits: list[Hit], tokens: Sequence[str], i: int) -> bool:
    """ "Shares fall sharply": an -ly adverb right after a hit intensifies that hit (in place)
    instead of the next one. Returns whether it did."""
    if not hits or not tokens[i].endswith("ly") or hits[-1].intensity != 1.0:
        return False
    last = hits[-1]
    if " ".join(tokens[max(0, i - len(last.phrase.split())) : i]) != last.phrase:
        return False
    factor = INTENSIFIERS[tokens[i]]
    hits[-1] = Hit(last.phrase, last.base_weight, last.contribution * factor, last.negated, factor)
    return True


def _scaled(hit: Hit, factor: float) -> Hit:
    return Hit(hit.phrase, hit.base_weight, hit.contribution * factor, hit.negated, hit.intensity)


def score_article(title: str, body: str, entity_sentiment: float | None = None) -> ArticleScore:
    """Blend the lexicon score of title (weighted TITLE_WEIGHT) and body with MarketAux's entity
    sentiment. Either part alone is used as is; neither gives 0 without signal."""
    t, b = score_text(title), score_text(body)
    hits = t.hits + b.hits
    raw = TITLE_WEIGHT * t.raw + b.raw
    lexicon = normalise(raw) if hits and raw != 0.0 else None
    entity = None if entity_sentiment is None else _clamp(entity_sentiment, -1.0, 1.0)
    if lexicon is not None and entity is not None:
        score = (1 - ENTITY_SENTIMENT_WEIGHT) * lexicon + ENTITY_SENTIMENT_WEIGHT * entity
    else:
        score = lexicon if lexicon is not None else (entity or 0.0)
    return ArticleScore(score, lexicon, entity, hits)


def recency_weight(published_at: datetime, now: datetime, half_life_h: float = RECENCY_HALF_LIFE_H) -> float:
    """0.5 per half-life of age; an article dated after `now` (clock skew) counts as fresh."""
    age_h = max(0.0, (now - published_at).total_seconds() / 3600.0)
    return 0.5 ** (age_h / half_life_h)


def source_quality(domain: str) -> float:
    """Quality of an outlet by domain, matching subdomains ("www.afr.com" -> afr.com)."""
    host = domain.strip().lower().removeprefix("www.")
    while host:
        if host in SOURCE_QUALITY:
            return SOURCE_QUALITY[host]
        _, _, host = host.partition(".")
    return UNKNOWN_SOURCE_QUALITY


def match_weight(match_score: float | None) -> float:
    """MarketAux match scores are unbounded (e.g. 15.087); saturate them into 0..1."""
    if match_score is None or not math.isfinite(match_score):
        return UNKNOWN_MATCH_WEIGHT
    m = max(0.0, match_score)
    return m / (m + MATCH_SCORE_HALF)


def confidence(weights: Sequence[float], scores: Sequence[float]) -> float:
    """0..1: grows with effective news volume (sum of weights) and with agreement in sign
    (|sum w*s| / sum w*|s|: 1 when all point the same way, 0 when they cancel)."""
    total_w = sum(weights)
    if total_w <= 0:
        return 0.0
    volume = 1.0 - math.exp(-total_w / VOLUME_SCALE)
    spread = sum(w * abs(s) for w, s in zip(weights, scores, strict=True))
    agreement = abs(sum(w * s for w, s in zip(weights, scores, strict=True))) / spread if spread else 0.0
    return volume * ((1 - AGREEMENT_SHARE) + AGREEMENT_SHARE * agreement)


def summarise(
    items: Iterable[NewsItem], now: datetime, half_life_h: float = RECENCY_HALF_LIFE_H
) -> SentimentSummary:
    """Weighted sentiment over a symbol's articles. Articles without any signal are counted in
    news_count but neither pull the score toward 0 nor add confidence. Articles dated after
    `now` are invisible: a replay at an earlier suite time must not see the future."""
    scored = [_score_item(item, now, half_life_h) for item in items if item.published_at <= now]
    signal = [s for s in scored if s.article.has_signal and s.weight > 0]
    weights = [s.weight for s in signal]
    scores = [s.article.score for s in signal]
    total_w = sum(weights)
    score = sum(w * s for w, s in zip(weights, scores, strict=True)) / total_w if total_w else 0.0
    ranked = sorted(scored, key=lambda s: (-abs(s.weight * s.article.score), -s.weight, s.item.uuid))
    return SentimentSummary(
        score=_clamp(score, -1.0, 1.0),
        confidence=confidence(weights, scores),
        news_count=len(scored),
        signal_count=len(signal),
        items=tuple(ranked),
    )


def _score_item(item: NewsItem, now: datetime, half_life_h: float) -> ScoredItem:
    article = score_article(item.title, item.body, item.entity_sentiment)
    weight = (
        recency_weight(item.published_at, now, half_life_h)
        * source_quality(item.source)
        * match_weight(item.match_score)
    )
    return ScoredItem(item, article, weight)


def decay_toward_neutral(
    score: float, confidence_: float, age_s: float, half_life_h: float = FALLBACK_HALF_LIFE_H
) -> tuple[float, float]:
    """Age a stored (score, confidence) toward (0, 0): both halve every half-life. Used for the
    honest fallback: an old opinion counts for less, and never for more."""
    factor = 0.5 ** (max(0.0, age_s) / 3600.0 / half_life_h)
    return score * factor, confidence_ * factor


def combine(parts: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Aggregate (score, confidence) pairs, e.g. the Big 4: confidence-weighted mean score;
    confidence is the mean confidence scaled by how much the parts agree in sign."""
    confs = [max(0.0, c) for _, c in parts]
    total = sum(confs)
    if not parts or total <= 0:
        return 0.0, 0.0
    score = sum(s * c for (s, _), c in zip(parts, confs, strict=True)) / total
    spread = sum(abs(s) * c for (s, _), c in zip(parts, confs, strict=True))
    agreement = abs(score * total) / spread if spread else 0.0
    mean_conf = total / len(parts)
    return _clamp(score, -1.0, 1.0), mean_conf * ((1 - AGREEMENT_SHARE) + AGREEMENT_SHARE * agreement)


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))
