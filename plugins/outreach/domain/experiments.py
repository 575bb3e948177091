"""A/B/n winner rule on positive-reply rate.

Test: one-sided two-proportion z-test (pooled standard error) of the best arm against every other arm, with a
Bonferroni correction (alpha / (k - 1)). A winner is declared only when every arm has at least ``min_sample``
sends and the best arm beats each other arm significantly. Otherwise: no decision (keep splitting).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    winner: str
    rates: dict[str, float]
    p_values: dict[str, float]
    test: str = "two-proportion z-test, one-sided, Bonferroni-corrected"


def z_test_p(success_a: int, n_a: int, success_b: int, n_b: int) -> float:
    """One-sided p-value that arm a's rate exceeds arm b's."""
    if n_a == 0 or n_b == 0:
        return 1.0
    pa, pb = success_a / n_a, success_b / n_b
    pooled = (success_a + success_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0 if pa <= pb else 0.0
    z = (pa - pb) / se
    return 0.5 * math.erfc(z / math.sqrt(2))


def decide(arms: dict[str, tuple[int, int]], min_sample: int = 100, alpha: float = 0.05) -> Decision | None:
    """``arms``: name -> (sent, positive replies). Returns a Decision or None."""
    if len(arms) < 2 or any(sent < min_sample for sent, _ in arms.values()):
        return None
    rates = {a: pos / sent for a, (sent, pos) in arms.items()}
    best = max(rates, key=lambda a: (rates[a], a))
    threshold = alpha / (len(arms) - 1)
    p_values = {a: z_test_p(arms[best][1], arms[best][0], pos, sent)
                for a, (sent, pos) in arms.items() if a != best}
    if all(p < threshold for p in p_values.values()):
        return Decision(best, rates, p_values)
    return None
