"""What exactly a step sends to one lead: the arm (kept once assigned, else the declared winner, else the
deterministic split), spintax seeded by (enrollment, step), then the sandboxed template with its fallback.
Used by the advance cycle and by `outreach sequences preview`, so the preview is the real text."""
from __future__ import annotations

from outreach.domain import templates
from outreach.domain.model import Action


def compose(action: Action, enrollment_id: int, variables: dict, assigned: str | None = None,
            winner: str | None = None) -> tuple[str | None, str | None, str | None]:
    """Returns (text, variant, skip_reason)."""
    variant = assigned or templates.choose_variant(action, enrollment_id, winner)
    text, _source, skip = templates.render_action(action, variant, variables, seed=f"{enrollment_id}:{action.key}")
    return text, variant, skip


def variables_for(row_variables: dict | None, recipient: dict) -> dict:
    """Template variables: the lead's columns plus person data from the identity graph."""
    v = dict(row_variables or {})
    for kind in ("twitter_username", "email", "linkedin", "xmtp"):
        if recipient.get(kind):
            v.setdefault(kind, recipient[kind])
    return v


def graph_order(seq) -> list[str]:
    """Action keys in breadth-first order from the start."""
    order, queue = [], [seq.start]
    while queue:
        k = queue.pop(0)
        if k in order:
            continue
        order.append(k)
        queue += [t.to for t in seq.triggers_from(k) if t.to]
    return order
