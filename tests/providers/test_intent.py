"""Reply intent on the labelled set (tests/data/reply_intents.csv): per-class precision and recall, each >= 0.85."""
from __future__ import annotations

import csv
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from outreach.domain import intent
from outreach.domain.intent import INTENTS, RuleClassifier, classify, return_date, set_classifier

DATA = Path(__file__).resolve().parents[1] / "data" / "reply_intents.csv"


def test_precision_and_recall_per_class():
    rows = list(csv.DictReader(DATA.open(encoding="utf-8")))
    assert len(rows) >= 200 and {r["label"] for r in rows} == set(INTENTS)
    clf = RuleClassifier()
    tp, fp, fn = Counter(), Counter(), Counter()
    wrong = []
    for r in rows:
        got = clf.classify(r["text"])
        if got == r["label"]:
            tp[got] += 1
        else:
            fp[got] += 1
            fn[r["label"]] += 1
            wrong.append((r["text"], r["label"], got))
    print(f"\nreply intent on {len(rows)} labelled replies")
    print(f"{'class':<14}{'n':>5}{'precision':>11}{'recall':>8}")
    scores = {}
    for c in INTENTS:
        p = tp[c] / (tp[c] + fp[c]) if tp[c] + fp[c] else 0.0
        rc = tp[c] / (tp[c] + fn[c]) if tp[c] + fn[c] else 0.0
        scores[c] = (p, rc)
        print(f"{c:<14}{tp[c] + fn[c]:>5}{p:>11.3f}{rc:>8.3f}")
    for t, want, got in wrong:
        print(f"  miss: {t!r}: labelled {want}, classified {got}")
    assert all(p >= 0.85 and rc >= 0.85 for p, rc in scores.values()), scores


@pytest.mark.parametrize("text,back", [
    ("I'm out of the office until January 12.", date(2026, 1, 12)),
    ("OOO - back 2026-01-21", date(2026, 1, 21)),
    ("Back on the 14th of January.", date(2026, 1, 14)),
    ("I will be back on 27.01.2026.", date(2026, 1, 27)),
    ("out of office until 2/15", date(2026, 2, 15)),
    ("I'm on PTO until Friday Jan 16", date(2026, 1, 16)),
    ("on holiday until 23 December", date(2026, 12, 23)),  # no year: the next such date
    ("Away until Monday", date(2026, 1, 12)),  # 2026-01-05 is a Monday: the next one
    ("Out of office until further notice.", None),
])
def test_return_dates(text, back):
    assert return_date(text, datetime(2026, 1, 5, 9, tzinfo=timezone.utc)) == back


def test_classifier_seam_and_legacy_names():
    class Model:
        def classify(self, text):
            return "negative"  # an old name still maps

    old = set_classifier(Model())
    try:
        assert classify("anything") == "objection"
    finally:
        set_classifier(old)
    assert classify("Not interested") == "objection" and intent.LEGACY == {"negative": "objection"}
