"""Inbound events pushed to us (webhooks): signatures, payload parsing, and the write + NOTIFY."""

CHANNEL = "outreach_inbound"  # the PostgreSQL NOTIFY channel: the receiver notifies, the reactions trigger listens
