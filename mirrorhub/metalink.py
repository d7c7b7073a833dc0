"""RFC 5854 Metalink documents (``.meta4``), built with an XML serializer. Pure.

Everything that comes from outside (file names, mirror URLs, country codes) goes into
element text or attribute values through ElementTree, which escapes it; nothing is pasted
into markup. What ElementTree cannot escape (characters XML 1.0 forbids) is refused.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from mirrorhub.domain import Decision

NS = "urn:ietf:params:xml:ns:metalink"
CONTENT_TYPE = "application/metalink4+xml"
MAX_PRIORITY = 999999  # RFC 5854 4.2.16.2: 1 (best) .. 999999

# Characters XML 1.0 does not allow at all (ElementTree would write them as they are).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_COUNTRY = re.compile("[a-z]{2}")


@dataclass(frozen=True, slots=True)
class MetalinkUrl:
    url: str  # absolute http(s) URL of the file
    location: str | None  # ISO 3166-1 alpha-2 country code, any case
    priority: int  # 1 = best


def file_name(path: str) -> str:
    """The ``<file name>`` for a published path: its last segment, relative and safe.

    RFC 5854 4.1.2.1: the name must not be absolute, contain ``..`` segments or step out of
    the download directory; one plain segment never does.
    """
    name = path.rsplit("/", 1)[-1]
    if name in ("", ".", "..") or "\\" in name or _NOT_XML.search(name):
        raise ValueError(f"no safe Metalink file name in {path!r}")
    return name


def build(
    name: str,
    size: int,
    sha256_hex: str | None,
    urls: Sequence[MetalinkUrl],
    *,
    origin: str | None = None,
    generator: str = "mirrorhub",
) -> bytes:
    """One ``<metalink>`` document describing one file, UTF-8 with an XML declaration.

    ``origin`` is the document's own absolute URL (``<origin dynamic="true">``: clients may
    fetch it again for a fresh mirror list).
    """
    if file_name(name) != name:
        raise ValueError(f"not a plain file name: {name!r}")
    if size < 0:
        raise ValueError("size must not be negative")
    if not urls:
        raise ValueError("a Metalink file needs at least one URL")  # RFC 5854 4.1.2
    # The namespace as a plain xmlns attribute on unqualified tags: ElementTree's
    # default_namespace option refuses the unqualified attributes (name, type...) RFC 5854 uses.
    root = ET.Element("metalink", {"xmlns": NS})
    ET.SubElement(root, "generator").text = generator
    if origin is not None:
        ET.SubElement(root, "origin", {"dynamic": "true"}).text = _checked(origin)
    f = ET.SubElement(root, "file", {"name": name})
    ET.SubElement(f, "size").text = str(size)
    if sha256_hex is not None:
        digest = bytes.fromhex(sha256_hex)  # refuses anything but hex
        if len(digest) != 32:
            raise ValueError("a SHA-256 digest has 32 bytes")
        ET.SubElement(f, "hash", {"type": "sha-256"}).text = digest.hex()
    for u in urls:
        attrs = {"priority": str(min(max(u.priority, 1), MAX_PRIORITY))}
        location = (u.location or "").lower()
        if _COUNTRY.fullmatch(location):
            attrs = {"location": location, **attrs}
        ET.SubElement(f, "url", attrs).text = _checked(u.url)
    document: bytes = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
    return document


def urls_for(decision: Decision, origin_url: str | None) -> list[MetalinkUrl]:
    """The mirrors a Metalink client may use for the decision's file, best first, then
    ``origin_url`` (the file's URL on the origin) last.

    Only mirrors that hold the current version go in: a segmented download mixes pieces
    from all of them, so a maybe-outdated copy (allow_outdated) would corrupt it. When the
    decision sends the file to the origin (origin-only, too small, no fresh mirror) no
    mirror is listed, as on a redirect.
    """
    out: list[MetalinkUrl] = []
    if decision.chosen is not None:
        for c in decision.ranked:
            if not c.maybe_outdated:
                out.append(MetalinkUrl(c.url, c.mirror.country, len(out) + 1))
    if origin_url is not None:
        out.append(MetalinkUrl(origin_url, None, len(out) + 1))
    return out


def _checked(text: str) -> str:
    if _NOT_XML.search(text):
        raise ValueError(f"character not allowed in XML: {text!r}")
    return text
