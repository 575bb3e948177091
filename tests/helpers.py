"""Test helpers: set up accounts, a sequence and leads through the same code the CLI uses."""
from __future__ import annotations

import textwrap

from outreach.clock import parse_now
from outreach.domain.accounts import parse_accounts
from outreach.domain.model import SequenceDef
from outreach.domain.sequence import parse_sequence
from outreach.store import catalog
from outreach.store.leads import import_leads, parse_leads_csv

ACCOUNTS = """
accounts:
  - {name: x-main, provider: x, conn_id: x_main, user_id: "1001"}
"""

DESIGN_SEQUENCE = """
name: founders-follow-dm
accounts: [x-main]
exclude_already_contacted: true
start: follow
actions:
  follow: {type: FOLLOW_ON_TWITTER}
  dm_warm:
    type: SEND_TWITTER_DM
    message: "Hey {{ first_name }}, thanks for the follow! Loved your post on {{ topic }}."
    fallback_message: "Hey, thanks for the follow!"
    variants:
      - {name: short, weight: 50, message: "Thanks for the follow, {{ first_name }}!"}
  dm_cold: {type: SEND_TWITTER_DM, message: "Hi {{ first_name }}, quick question about {{ topic }}"}
triggers:
  - {from: follow, trigger: FOLLOWED_BACK, to: dm_warm}
  - {from: follow, trigger: NOT_FOLLOWED_BACK, after: 2d, to: dm_cold}
  - {from: dm_warm, trigger: REPLIED, to: END}
  - {from: dm_cold, trigger: REPLIED, to: END}
  - {from: dm_cold, trigger: NOT_REPLIED, after: 3d, to: END}
"""


# one DM, and a follow-up the moment the lead replies: the fast path's tests (webhooks, reactions)
REPLY_THEN_THANKS = """
name: dm-then-thanks
accounts: [x-main]
start: dm
actions:
  dm: {type: SEND_TWITTER_DM, message: "Hi {{ first_name }}"}
  thanks: {type: SEND_TWITTER_DM, message: "Thanks for the reply, {{ first_name }}!"}
triggers:
  - {from: dm, trigger: REPLIED, to: thanks}
  - {from: dm, trigger: NOT_REPLIED, after: 3d, to: END}
  - {from: thanks, trigger: REPLIED, to: END}
"""


def x_activity(sender: str = "50000", eid: str = "1900000000000000001", at_ms: int | None = None,
               me: str = "1001", text: str = "Sounds great") -> bytes:
    """An X account-activity webhook body holding one DM from ``sender`` to ``me`` (now, unless ``at_ms``)."""
    import json
    import time

    at_ms = int(time.time() * 1000) if at_ms is None else at_ms
    return json.dumps({"for_user_id": me, "direct_message_events": [{
        "type": "message_create", "id": eid, "created_timestamp": str(at_ms),
        "message_create": {"target": {"recipient_id": me}, "sender_id": sender,
                           "message_data": {"text": text}}}]}).encode()


def setup(engine, sequence_yaml: str = DESIGN_SEQUENCE, leads: list[dict] | None = None, n: int = 10,
          now: str = "2026-01-05T09:00:00Z", accounts_yaml: str = ACCOUNTS) -> SequenceDef:
    """Apply accounts and a sequence, and enrol ``leads`` (or ``n`` generated X leads)."""
    if leads is None:
        leads = [{"name": f"Lead{i} Person", "twitter_id": str(50000 + i), "topic": "agents"} for i in range(n)]
    cols = sorted({k for r in leads for k in r})
    csv_text = ",".join(cols) + "\n" + "\n".join(",".join(str(r.get(c, "")) for c in cols) for r in leads) + "\n"
    with engine.begin() as conn:
        catalog.apply_accounts(conn, parse_accounts(textwrap.dedent(accounts_yaml), "accounts.yaml"))
        seq = parse_sequence(textwrap.dedent(sequence_yaml), "seq.yaml", catalog.account_providers(conn))
        catalog.apply_sequence(conn, seq)
        row = catalog.latest_version(conn, seq.name)
        import_leads(conn, row, seq, parse_leads_csv(csv_text, "leads.csv"), parse_now(now))
    return seq


def run_at(engine, sandbox, now: str, **kw) -> dict:
    """One whole tick with the sandbox clock and the engine clock both set to ``now``."""
    from outreach.engine.tick import run_tick

    sandbox.clock(now)
    return run_tick(engine, parse_now(now), **kw)


def pick_ids(sandbox, n: int, follows_back: bool | None = None, replies: bool | None = None,
             start: int = 50000) -> list[str]:
    """``n`` X user ids whose simulated recipient behaves as asked (per ``sandbox.state.predict``)."""
    out, i = [], start
    while len(out) < n:
        p = sandbox.state.predict(str(i))
        if (follows_back is None or p["follows_back"] == follows_back) and (replies is None or p["replies"] == replies):
            out.append(str(i))
        i += 1
    return out
