"""The exception tree of mirrorhub.

    MirrorhubError                 base of everything we raise on purpose
    ├── SettingsError              a setting has a wrong value (names the setting)
    ├── InvalidPath                a request path is malformed (-> 400)
    ├── ValidationError            user input for a mirror, user, ... is wrong (field -> reason)
    ├── NotFound                   a named object does not exist
    ├── Conflict                   a named object already exists
    ├── GeoIPError                 a GeoIP database cannot be opened or fetched
    ├── ScanFailed                 a mirror or origin scan failed; last good data is kept
    │   └── ListingError           a listing could not be parsed (garbage, truncated, endless)
    └── ProbeFailed                a health/trace probe failed (classified reason inside)

Third-party errors are translated at the boundary: ``raise ScanFailed(...) from exc``.
"""

from __future__ import annotations

from collections.abc import Mapping


class MirrorhubError(Exception):
    """Base class for mirrorhub's own errors."""


class SettingsError(MirrorhubError):
    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"{setting}: {reason}")
        self.setting = setting
        self.reason = reason


class InvalidPath(MirrorhubError):
    """The request path cannot be a published path."""


class ValidationError(MirrorhubError):
    """User input failed validation; ``fields`` maps a field name to the reason."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields = dict(fields)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.fields.items()))


class NotFound(MirrorhubError):
    pass


class Conflict(MirrorhubError):
    pass


class GeoIPError(MirrorhubError):
    pass


class ScanFailed(MirrorhubError):
    pass


class ListingError(ScanFailed):
    pass


class ProbeFailed(MirrorhubError):
    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
