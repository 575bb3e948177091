"""Reply intent: unsubscribe, negative, positive or neutral, from the reply's text. Keyword rules, no model.

Unsubscribe wins over everything (compliance first); then negative; then positive.
"""
from __future__ import annotations

import re

_UNSUBSCRIBE = [r"\bstop\b", r"\bunsubscribe\b", r"\bremove me\b", r"\btake me off\b", r"\bopt[ -]?out\b",
                r"\bdo not (contact|message|email|dm)\b", r"\bdon'?t (contact|message|email|dm)\b",
                r"\bno more (messages|emails|dms)\b", r"\bleave me alone\b", r"\bspam\b"]
_NEGATIVE = [r"\bnot interested\b", r"\bno thanks\b", r"\bno,? thank you\b", r"\bnot (now|a fit|for us)\b",
             r"\bpass\b", r"\bwe'?re good\b", r"\bnot looking\b",
             r"\bnot right now\b"]
_POSITIVE = [r"\binterested\b", r"\bsounds (good|great|interesting)\b", r"\blet'?s (talk|chat|connect|do it)\b",
             r"\b(happy|glad|keen) to\b", r"\bbook\b", r"\bcalendar\b", r"\bcall\b", r"\bdemo\b", r"\btell me more\b",
             r"\bsure\b", r"\byes\b", r"\blove to\b", r"\bmore details\b", r"\bpricing\b", r"\btake a look\b", r"\bthanks?\b.*\b(reach|note|follow)"]

_COMPILED = [(name, [re.compile(p, re.I) for p in pats])
             for name, pats in (("unsubscribe", _UNSUBSCRIBE), ("negative", _NEGATIVE), ("positive", _POSITIVE))]


def classify(text: str | None) -> str:
    t = (text or "").strip()
    if not t:
        return "neutral"
    for name, patterns in _COMPILED:
        if any(p.search(t) for p in patterns):
            return name
    return "neutral"
