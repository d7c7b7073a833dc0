"""Views of a selection Decision other than the 302: JSON, mirror list, Metalink, checksum.

Each view is a pure function of the Decision (and the file's digest) that returns a body;
:class:`Views` only writes it out. These answers bypass the /-/ app and its middleware, so
the security headers are added here.

The mirror list and the JSON also show each mirror's estimated load against its capacity
(:func:`mirrorhub.load.mirror_load`). :attr:`Views.load` returns the dispatcher's current
:class:`~mirrorhub.load.LoadView`; it is read once per rendered view, never on the 302 path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jinja2

from mirrorhub import metalink
from mirrorhub.domain import Candidate, Decision, Mirror
from mirrorhub.load import LoadView, MirrorLoad, mirror_load
from mirrorhub.paths import quote_path
from mirrorhub.settings import Settings
from mirrorhub.web.redirect import Scope, Send, ViewHandler
from mirrorhub.web.templating import CSP, make_templates

_NO_STORE = (b"cache-control", b"private, no-store")  # every view depends on the client
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_PAGE_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


def load_of(mirror: Mirror, load: LoadView | None) -> MirrorLoad:
    return mirror_load(load, mirror.name, mirror.capacity)


def candidate_json(c: Candidate, load: LoadView | None = None) -> dict[str, Any]:
    return {
        "mirror": c.mirror.name,
        "url": c.url,
        "country": c.mirror.country,
        "tier": c.tier.name.lower(),
        "distance_km": None if c.distance_km is None else round(c.distance_km, 1),
        "share": round(c.share, 4),
        "capacity_mbps": c.mirror.capacity,
        "load": load_of(c.mirror, load).to_json(),
    }


def decision_json(
    decision: Decision, digest: bytes | None, load: LoadView | None = None
) -> dict[str, Any]:
    """The ``?json`` document (and the API's decision); ``load`` adds the load figures
    (without it every mirror shows 0 / its capacity)."""
    f = decision.file
    loc = decision.client.location
    return {
        "path": decision.path,
        "outcome": decision.outcome.value,
        "origin_reason": decision.origin_reason.value if decision.origin_reason else None,
        "file": None
        if f is None
        else {
            "name": f.path.rsplit("/", 1)[-1],
            "size": f.size,
            "mtime": f.mtime,
            "sha256": digest.hex() if digest else None,
        },
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
        "chosen": candidate_json(decision.chosen, load) if decision.chosen else None,
        "ranked": [candidate_json(c, load) for c in decision.ranked],
        "excluded": [
            {
                "mirror": e.mirror.name,
                "country": e.mirror.country,
                "reason": e.reason.value,
                "load": load_of(e.mirror, load).to_json(),
            }
            for e in decision.excluded
        ],
    }


def sha256_line(decision: Decision, digest: bytes | None) -> bytes | None:
    """``<hex>  <name>\\n`` as ``sha256sum`` writes it (the checksum file sits next to the
    file, so the bare name); None when the origin scan has no hash for the file."""
    if digest is None:
        return None
    name = decision.path.rsplit("/", 1)[-1]
    return f"{digest.hex()}  {name}\n".encode()


@dataclass(frozen=True, slots=True)
class Urls:
    """Where the origin and the dispatcher are, for URLs that views hand out."""

    origin_url: str | None = None  # MIRRORHUB_ORIGIN_URL
    public_url: str | None = None  # MIRRORHUB_PUBLIC_URL


def metalink_document(decision: Decision, digest: bytes | None, urls: Urls) -> bytes | None:
    """The RFC 5854 document for the decision's file, or None when no URL can be listed."""
    f = decision.file
    if f is None:
        return None
    quoted = quote_path(f.path)
    origin: str | None = None
    if urls.origin_url is not None:
        origin = urls.origin_url + quoted
    elif urls.public_url is not None and decision.chosen is None:
        origin = urls.public_url + quoted  # the dispatcher streams it from its origin tree
    entries = metalink.urls_for(decision, origin)
    if not entries:
        return None
    try:
        return metalink.build(
            metalink.file_name(f.path),
            f.size,
            digest.hex() if digest else None,
            entries,
            origin=urls.public_url + quoted + ".meta4" if urls.public_url else None,
        )
    except ValueError:  # a name XML cannot carry
        return None


def mirrorlist_context(
    decision: Decision,
    digest: bytes | None,
    load: LoadView | None = None,
    load_window: float = 60.0,
) -> dict[str, Any]:
    """What templates/mirrorlist.html shows; raw values, the template escapes them."""
    f = decision.file
    assert f is not None
    name = f.path.rsplit("/", 1)[-1]
    href = "./" + quote(name, safe="")  # "./": a name like "a:b" is not a URL scheme
    return {
        "path": f.path,
        "name": name,
        "file": f,
        "sha256": digest.hex() if digest else None,
        "client": decision.client,
        "options": decision.options,
        "avoid": sorted(decision.options.avoid),
        "origin_reason": decision.origin_reason.value if decision.origin_reason else None,
        "chosen": decision.chosen,
        "ranked": [
            {
                "name": c.mirror.name,
                "country": c.mirror.country,
                "tier": c.tier.name.lower(),
                "distance": None if c.distance_km is None else round(c.distance_km),
                "share": round(c.share * 100, 1),
                # Only http(s) links: a href must never become a javascript: URL.
                "url": c.url if c.url.startswith(("http://", "https://")) else None,
                "outdated": c.maybe_outdated,
                "load": load_of(c.mirror, load),
            }
            for c in decision.ranked
        ],
        "excluded": [
            {
                "name": e.mirror.name,
                "country": e.mirror.country,
                "reason": e.reason.value,
                "load": load_of(e.mirror, load),
            }
            for e in decision.excluded
        ],
        "load_window": load_window,
        "links": {
            "meta4": href + ".meta4",
            "sha256": href + ".sha256",
            "json": href + "?json",
        },
    }


def _no_load() -> LoadView | None:
    return None


class Views(ViewHandler):
    names = frozenset({"json", "mirrorlist", "meta4", "sha256"})

    def __init__(
        self,
        settings: Settings | None = None,
        load: Callable[[], LoadView | None] | None = None,
    ) -> None:
        s = settings or Settings()
        self.urls = Urls(s.origin_url, s.public_url)
        self.load_window = s.load_window_seconds
        # The current fleet-wide load view, or None (no estimate yet, feature not wired):
        # given here or set later by mirrorhub.web.pages once the dispatcher exists.
        self.load: Callable[[], LoadView | None] = load or _no_load
        self._page: jinja2.Template | None = None

    async def render(
        self, view: str, decision: Decision, digest: bytes | None, scope: Scope, send: Send
    ) -> None:
        status, ctype, body = 200, b"application/json", b""
        extra: list[tuple[bytes, bytes]] = []
        if view == "json":
            body = json.dumps(decision_json(decision, digest, self.load()), indent=1).encode()
        elif view == "mirrorlist":
            ctype, extra = b"text/html; charset=utf-8", _PAGE_HEADERS
            context = mirrorlist_context(decision, digest, self.load(), self.load_window)
            body = self.page().render(context).encode()
        elif view == "meta4":
            document = metalink_document(decision, digest, self.urls)
            if document is None:
                status, ctype = 404, b"text/plain; charset=utf-8"
                body = b"no Metalink: no mirror holds this file and no origin URL is set\n"
            else:
                ctype, body = metalink.CONTENT_TYPE.encode(), document
                disposition = "attachment; filename*=UTF-8''" + quote(
                    decision.path.rsplit("/", 1)[-1] + ".meta4", safe=""
                )
                extra = [(b"content-disposition", disposition.encode("ascii"))]
        elif view == "sha256":
            ctype = b"text/plain; charset=utf-8"
            line = sha256_line(decision, digest)
            if line is None:
                status, body = 404, b"no SHA-256 known for this file\n"
            else:
                body = line
        else:
            raise ValueError(f"unknown view {view!r}")
        headers = [
            (b"content-type", ctype),
            _NO_STORE,
            _NOSNIFF,
            (b"content-length", str(len(body)).encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    def page(self) -> jinja2.Template:
        if self._page is None:  # the first mirror list loads the template, once
            self._page = make_templates().env.get_template("mirrorlist.html")
        return self._page
