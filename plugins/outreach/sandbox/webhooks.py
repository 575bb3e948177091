"""The sandbox's webhook pusher: signed POSTs of replies to the receiver, like X and the gateways do."""
from __future__ import annotations

import json
import threading
import time

import requests

from outreach.inbound.signing import X_SIGNATURE_HEADER, gateway_headers, x_signature

PROVIDERS = ("x", "linkedin", "xmtp")


class WebhookPusher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: dict[str, dict] = {}
        self._deliveries: list[dict] = []
        self._session = requests.Session()

    def configure(self, spec: dict) -> dict:
        targets = {}
        for provider, t in (spec or {}).items():
            if provider not in PROVIDERS:
                raise ValueError(f"webhook provider must be one of {list(PROVIDERS)}")
            if not isinstance(t, dict) or not isinstance(t.get("url"), str) or not isinstance(t.get("secret"), str):
                raise ValueError("each webhook needs a string url and secret")
            targets[provider] = {"url": t["url"], "secret": t["secret"]}
        with self._lock:
            self._targets = targets
        return self.targets()

    def targets(self) -> dict:
        with self._lock:
            return {p: {"url": t["url"]} for p, t in self._targets.items()}  # never echo secrets

    def clear(self) -> None:
        with self._lock:
            self._deliveries = []

    def deliveries(self) -> list[dict]:
        with self._lock:
            return [dict(d) for d in self._deliveries]

    def push(self, provider: str, payload: dict) -> dict | None:
        """POST the payload, signed, in a background thread; returns the delivery record (filled in later)."""
        with self._lock:
            target = self._targets.get(provider)
            if target is None:
                return None
            d = {"n": len(self._deliveries) + 1, "provider": provider, "queued_at": time.time(), "status": None}
            self._deliveries.append(d)
        threading.Thread(target=self._send, args=(target, provider, payload, d), daemon=True).start()
        return dict(d)

    def _send(self, target: dict, provider: str, payload: dict, d: dict) -> None:
        body = json.dumps(payload).encode()
        if provider == "x":
            headers = {X_SIGNATURE_HEADER: x_signature(target["secret"], body)}
        else:
            headers = gateway_headers(target["secret"], body, int(time.time()))
        headers["Content-Type"] = "application/json"
        d["sent_at"] = time.time()
        try:
            r = self._session.post(target["url"], data=body, headers=headers, timeout=10)
            d["status"] = r.status_code
        except requests.RequestException as e:
            d["status"], d["error"] = 0, type(e).__name__
        d["answered_at"] = time.time()
