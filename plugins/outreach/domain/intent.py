"""Reply intent from the reply's text: transparent keyword rules behind a ``Classifier`` seam (a model later).

Classes (``INTENTS``): positive, neutral, objection, referral, unsubscribe, out_of_office. Rules are tried in a
fixed order, first match wins: unsubscribe (compliance first), out_of_office (auto-replies often name a
colleague or say "not available"), referral, objection (before positive: "not interested" contains
"interested"), positive; anything else is neutral. The old class ``negative`` is now ``objection``
(``LEGACY``). Measured on ``tests/data/reply_intents.csv`` by ``tests/providers/test_intent.py``.

``return_date`` reads the return date of an out-of-office reply (ISO, "January 12", "15 April 2026",
"the 14th of January", "01/20/2026", "27.01.2026", "2/15", "until Monday"); a date without a year is the next
such date on or after the reply.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Protocol

INTENTS = ("positive", "neutral", "objection", "referral", "unsubscribe", "out_of_office")
LEGACY = {"negative": "objection"}

_UNSUBSCRIBE = [
    r"\bstop\b", r"\bunsubscribe\b", r"\bremove (me|my)\b", r"\btake me off\b", r"\bopt[ -]?out\b",
    r"\b(do not|don'?t|never) (ever )?(contact|message|email|dm|write|reach out)", r"\bno more (messages|emails|dms)\b",
    r"\bleave me alone\b", r"\bspam", r"\bdelete my (data|contact|email|info)", r"\bcease\b", r"\bquit sending\b",
    r"\bnever signed up\b",
]
_OOO = [
    r"\bout of (the )?office\b", r"\booo\b", r"\bauto(matic)?[ -]?(reply|response|responder)\b", r"\bautoreply\b",
    r"\bautoresponder\b", r"\bautomated response\b", r"\bon (vacation|holiday|pto|sabbatical)\b",
    r"\bon (annual |parental |maternity |paternity |sick )?leave\b", r"\b(away|off|out) until\b",
    r"\bcurrently away\b", r"\baway (on|from)\b", r"\bno access to email\b", r"\blimited (access|connectivity)\b",
    r"\bwill (be back|return)\b", r"\breturning (on )?(mon|tue|wed|thu|fri|sat|sun|jan|feb|mar|apr|may|jun|jul|aug|"
    r"sep|oct|nov|dec|[0-9])", r"\bback in the office\b",
]
_REFERRAL = [
    r"\b(not|wrong) (the )?(right |best )?person\b", r"\bright (person|contact)\b", r"\bbest person\b",
    r"\bdecision maker\b", r"\bforward(ed|ing)\b", r"\bcc'?ing\b", r"\bcopying (him|her|them)\b",
    r"\badding my colleague\b", r"\bloop in our\b", r"\bhand (this|it) (over|off)\b", r"\bredirecting\b",
    r"\bpassed (your|this) (note|message)\b", r"\bsits with\b", r"\bno longer work\b", r"\bleft the company\b",
    r"\bmoved on from\b", r"\bthe one to (ask|evaluate|talk)\b", r"\bowns? (this|tooling|that)\b",
    r"\bhandles? (all )?(vendor|this kind|these)", r"\bbetter luck with\b", r"\byou want our\b",
    r"\b(reach out|talk|speak|get in touch|contact|email|try)\b[^.]{0,40}\b(colleague|cto|ceo|coo|cfo|cofounder|"
    r"co-founder|head of|lead|manager|vp|director|replacement|procurement|partnerships|finance|boss|owner)\b",
    r"\bsend (this|it) to my\b",
]
_OBJECTION = [
    r"\bnot interested\b", r"\bno,? thank(s| you)\b", r"\bnot (now|a fit|for us|a priority|in the market)\b",
    r"\bnot right now\b", r"\bpass\b", r"\bwe'?re (good|fine|all set)\b", r"\bnot looking\b", r"\bnah\b", r"\bnope\b",
    r"\balready (use|have|using)\b", r"\bcompetitor\b", r"\banother vendor\b", r"\bhappy with (it|our|what)\b",
    r"\bno budget\b", r"\bbudget is\b", r"\bbuilt (this|it|our own) in[- ]house\b", r"\btoo expensive\b", r"\bprice point\b",
    r"\bdon'?t think (this|it)('s| is) a fit\b", r"\bbad timing\b", r"\btiming is bad\b", r"\bbandwidth\b",
    r"\bdoesn'?t solve\b", r"\bskeptical\b", r"\bdidn'?t work\b", r"\bno need\b", r"\bnever approve\b",
    r"\bnot buying\b", r"\blocked in\b", r"\b(isn'?t|not) something we need\b", r"\boverkill\b",
    r"\bdon'?t see the value\b", r"\b(isn'?t|not) relevant\b", r"\bhave it covered\b", r"\bnot for us\b",
]
_POSITIVE = [
    r"\binterested\b", r"\bsounds (good|great|interesting)\b", r"\blet'?s (talk|chat|connect|do it|find|set|meet)\b",
    r"\bhappy to (chat|hop|learn|talk|take)\b", r"\bkeen\b", r"\bbook\b", r"\bcalendar\b", r"\bcall\b", r"\bdemo\b",
    r"\btell me more\b", r"(?<!not )\bsure\b", r"\b(yes|yep|yeah|absolutely|definitely)\b", r"\blove to\b",
    r"\bmore (details|info)\b", r"\bpricing\b", r"\btake a look\b",
    r"\bsend (me |over )?(a |some |the )?(deck|times|info|link|summary|video|pricing)\b", r"\bcase study\b",
    r"\btrial\b", r"\bwalkthrough\b", r"\bnext steps\b", r"\bget started\b", r"\bopen to\b", r"\bcount me in\b",
    r"\bset (it|something) up\b", r"\bare you free\b", r"\bwhat works for you\b", r"\bcurious\b", r"\bintriguing\b",
    r"\blooks (cool|great|good)\b", r"\bcan we (connect|meet|talk)\b", r"\bworth a conversation\b",
    r"\bexactly (our|this|what)\b", r"\bcould be useful\b", r"\bmight be a fit\b", r"\binvite\b", r"\bonboarding\b",
    r"\bsee how it works\b", r"\bcompare\b",
]

RULES = [(name, [re.compile(p, re.I) for p in pats]) for name, pats in (
    ("unsubscribe", _UNSUBSCRIBE), ("out_of_office", _OOO), ("referral", _REFERRAL), ("objection", _OBJECTION),
    ("positive", _POSITIVE))]


class Classifier(Protocol):
    """The seam: anything with ``classify(text) -> one of INTENTS`` (a model later)."""

    def classify(self, text: str | None) -> str: ...


class RuleClassifier:
    """Keyword rules, first matching class wins (order in ``RULES``)."""

    def explain(self, text: str | None) -> tuple[str, str | None]:
        """(intent, the pattern that decided it)."""
        t = (text or "").strip()
        if not t:
            return "neutral", None
        for name, patterns in RULES:
            for p in patterns:
                if p.search(t):
                    return name, p.pattern
        return "neutral", None

    def classify(self, text: str | None) -> str:
        return self.explain(text)[0]


_classifier: Classifier = RuleClassifier()


def set_classifier(classifier: Classifier) -> Classifier:
    """Swap the classifier used by ingest (returns the previous one)."""
    global _classifier
    old, _classifier = _classifier, classifier
    return old


def classify(text: str | None) -> str:
    intent = _classifier.classify(text)
    return LEGACY.get(intent, intent)


# ---------------------------------------------------------------------------------------------- return dates
_MONTHS = {m: i for i, ms in enumerate((
    ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",), ("jun", "june"),
    ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
    ("dec", "december")), 1) for m in ms}
_MON = r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|oct(?:ober)?|" \
       r"nov(?:ember)?|dec(?:ember)?)\.?"
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DATE_RES = [
    ("iso", re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")),
    ("dmy_dot", re.compile(r"\b(\d{1,2})\.(\d{1,2})\.(\d{4})\b")),
    ("mdy_slash", re.compile(r"\b(\d{1,2})/(\d{1,2})(?:/(\d{2,4}))?\b")),
    ("day_of_month", re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MON + r"(?:,?\s+(\d{4}))?", re.I)),
    ("month_day", re.compile(_MON + r"\s+(\d{1,2})(?:st|nd|rd|th)?\b(?:,?\s+(\d{4}))?", re.I)),
    ("weekday", re.compile(r"\b(?:until|till|back on|returning|return on|back)\s+(?:on\s+)?(" + "|".join(_DAYS) + r")\b",
                           re.I)),
]


def _next_on_or_after(month: int, day: int, ref: date) -> date:
    d = date(ref.year, month, day)
    return d if d >= ref else date(ref.year + 1, month, day)


def return_date(text: str | None, received: datetime) -> date | None:
    """The first return date mentioned in an out-of-office reply, or None."""
    t = text or ""
    ref = received.date()
    found: list[tuple[int, date]] = []
    for kind, rx in _DATE_RES:
        for m in rx.finditer(t):
            try:
                if kind == "iso":
                    d = date(int(m[1]), int(m[2]), int(m[3]))
                elif kind == "dmy_dot":
                    d = date(int(m[3]), int(m[2]), int(m[1]))
                elif kind == "mdy_slash":
                    if m[3]:
                        y = int(m[3]) + (2000 if len(m[3]) == 2 else 0)
                        d = date(y, int(m[1]), int(m[2]))
                    else:
                        d = _next_on_or_after(int(m[1]), int(m[2]), ref)
                elif kind == "day_of_month":
                    mon = _MONTHS[m[2].lower().rstrip(".")[:3]]
                    d = date(int(m[3]), mon, int(m[1])) if m[3] else _next_on_or_after(mon, int(m[1]), ref)
                elif kind == "month_day":
                    mon = _MONTHS[m[1].lower().rstrip(".")[:3]]
                    d = date(int(m[3]), mon, int(m[2])) if m[3] else _next_on_or_after(mon, int(m[2]), ref)
                else:  # weekday: the next such day after the reply
                    want = _DAYS.index(m[1].lower())
                    d = ref + timedelta(days=(want - ref.weekday() - 1) % 7 + 1)
            except (ValueError, KeyError):
                continue
            found.append((kind == "weekday", m.start(), d))
    if not found:
        return None
    return min(found)[2]  # a written date beats a bare weekday ("until Friday Jan 16"); then the first one
