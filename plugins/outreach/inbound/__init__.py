"""Inbound events pushed to us (webhooks): signatures, payload parsing, and the write + NOTIFY."""
