"""Views of a selection Decision other than the 302: JSON for now."""

from __future__ import annotations

import json
from typing import Any

from mirrorhub.domain import Candidate, Decision
from mirrorhub.web.redirect import Scope, Send, ViewHandler


def candidate_json(c: Candidate) -> dict[str, Any]:
    return {
        "mirror": c.mirror.name,
        "url": c.url,
        "country": c.mirror.country,
        "tier": c.tier.name.lower(),
        "distance_km": None if c.distance_km is None else round(c.distance_km, 1),
        "share": round(c.share, 4),
        "capacity_mbps": c.mirror.capacity,
    }


def decision_json(decision: Decision, digest: bytes | None) -> dict[str, Any]:
    f = decision.file
    loc = decision.client.location
    return {
        "path": decision.path,
        "outcome": decision.outcome.value,
        "origin_reason": decision.origin_reason.value if decision.origin_reason else None,
        "file": None
        if f is None
        else {"size": f.size, "mtime": f.mtime, "sha256": digest.hex() if digest else None},
        "client": {
            "address": str(decision.client.address),
            "country": loc.country,
            "continent": loc.continent,
            "asn": loc.asn,
            "latitude": loc.latitude,
            "longitude": loc.longitude,
        },
        "options": {
            "scheme": decision.options.scheme.value,
            "https_only": decision.options.https_only,
            "country": decision.options.country,
            "avoid": sorted(decision.options.avoid),
        },
        "chosen": candidate_json(decision.chosen) if decision.chosen else None,
        "ranked": [candidate_json(c) for c in decision.ranked],
        "excluded": [
            {"mirror": e.mirror.name, "reason": e.reason.value} for e in decision.excluded
        ],
    }


class Views(ViewHandler):
    names = frozenset({"json"})

    async def render(
        self, view: str, decision: Decision, digest: bytes | None, scope: Scope, send: Send
    ) -> None:
        body = json.dumps(decision_json(decision, digest), indent=1).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"cache-control", b"private, no-store"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
