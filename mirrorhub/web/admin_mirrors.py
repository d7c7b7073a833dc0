"""Mirror management under /-/admin/mirrors: list, register, edit, detail and actions.

Admins may do everything; operators see every mirror and change only those assigned to them
(registering and deleting mirrors is for admins). Every change goes through
:mod:`mirrorhub.services`, which writes the audit entry with the signed-in user as actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mirrorhub import audit, services, users
from mirrorhub.db.repositories import MirrorRecord
from mirrorhub.domain import Health, Location
from mirrorhub.errors import Conflict, NotFound, ValidationError
from mirrorhub.web import admin_forms as forms
from mirrorhub.web import admin_queries as q
from mirrorhub.web.admin_core import PREFIX, AdminCore, Ctx
from mirrorhub.web.charts import line_chart

PAGE_SIZE = 50
STATUSES = ("up", "lagging", "scan-failing", "down", "unknown", "disabled")
SORTS = ("name", "status", "country", "lag", "capacity", "updated")
DNS_TIMEOUT = 3.0


def status_of(record: MirrorRecord) -> str:
    if not record.mirror.enabled:
        return "disabled"
    if record.state.health is Health.DOWN:
        return "down"
    if record.state.scan_failed:
        return "scan-failing"
    if record.state.lagging:
        return "lagging"
    return "up" if record.state.health is Health.UP else "unknown"


def _sort_key(sort: str) -> Callable[[MirrorRecord], Any]:
    keys: dict[str, Callable[[MirrorRecord], Any]] = {
        "name": lambda r: r.mirror.name,
        "status": lambda r: (STATUSES.index(status_of(r)), r.mirror.name),
        "country": lambda r: (r.mirror.country or "~", r.mirror.name),
        "lag": lambda r: (r.lag_seconds is None, r.lag_seconds or 0.0, r.mirror.name),
        "capacity": lambda r: (r.mirror.capacity, r.mirror.name),
        "updated": lambda r: (r.updated_at, r.mirror.name),
    }
    return keys[sort]


def mirror_url(name: str, action: str = "") -> str:
    return f"{PREFIX}/mirrors/{quote(name, safe='')}" + (f"/{action}" if action else "")


async def suggest_location(ctx: Ctx, record: MirrorRecord) -> tuple[str, Location] | None:
    """The address of the mirror's host and what GeoIP says about it (None: nothing known)."""
    url = record.mirror.https_url or record.mirror.http_url or ""
    host = (urlsplit(url).hostname or "").split("%")[0]
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), DNS_TIMEOUT
            )
            address = ipaddress.ip_address(str(infos[0][4][0]).split("%")[0])
        except (OSError, TimeoutError, IndexError, ValueError):
            return None
    geo = ctx.extra["state"].geo
    found: Location = geo.locate(address)
    if found == Location():
        return None
    return str(address), found


def _differs(record: MirrorRecord, found: Location) -> bool:
    m = record.mirror
    return (
        (found.country is not None and found.country != m.country)
        or (found.asn is not None and found.asn != m.asn)
        or (
            found.latitude is not None
            and (m.latitude is None or abs(found.latitude - m.latitude) > 0.01)
        )
    )


class MirrorPages:
    def __init__(self, core: AdminCore) -> None:
        self.core = core
        self.state = core.state
        self.tasks: set[asyncio.Task[None]] = self.state.extras.setdefault("admin_tasks", set())

    # --- helpers ---

    async def _record(self, ctx: Ctx) -> MirrorRecord | None:
        ctx.extra["state"] = self.state
        try:
            return await services.get_mirror(self.state.sessions, ctx.request.path_params["name"])
        except NotFound:
            return None

    async def _may_edit(self, ctx: Ctx, record: MirrorRecord) -> bool:
        assert ctx.user is not None
        return await users.may_edit(
            self.state.sessions, ctx.user.user_id, ctx.user.role, record.mirror.id
        )

    def _editable(
        self, handler: Callable[[Ctx, MirrorRecord], Awaitable[Response]]
    ) -> Callable[[Ctx], Awaitable[Response]]:
        """Load the mirror named in the path and refuse users who may not change it."""

        async def wrapped(ctx: Ctx) -> Response:
            record = await self._record(ctx)
            if record is None:
                return self.core.not_found(ctx, "No such mirror.")
            if not await self._may_edit(ctx, record):
                return self.core.forbidden(ctx, "This mirror is not assigned to you.")
            return await handler(ctx, record)

        return wrapped

    # --- the list ---

    async def list_page(self, ctx: Ctx) -> Response:
        params = ctx.request.query_params
        search = params.get("q", "").strip()[:100]
        status = params.get("status", "")
        country = params.get("country", "").strip().upper()[:2]
        enabled = params.get("enabled", "")
        sort = params.get("sort", "name")
        sort = sort if sort in SORTS else "name"
        descending = params.get("dir") == "desc"
        records = await services.list_mirrors(self.state.sessions)
        countries = sorted({r.mirror.country for r in records if r.mirror.country})
        shown = [
            r
            for r in records
            if (not search or search.lower() in f"{r.mirror.name} {r.contact}".lower())
            and (status not in STATUSES or status_of(r) == status)
            and (not country or r.mirror.country == country)
            and (enabled not in ("yes", "no") or r.mirror.enabled == (enabled == "yes"))
        ]
        shown.sort(key=_sort_key(sort), reverse=descending)
        base = {"q": search, "status": status, "country": country, "enabled": enabled}

        def sort_link(column: str) -> str:
            flip = "asc" if column == sort and descending else "desc" if column == sort else "asc"
            query = {k: v for k, v in {**base, "sort": column, "dir": flip}.items() if v}
            return f"{PREFIX}/mirrors?{urlencode(query)}"

        editable: set[int] = set()
        if ctx.user is not None and not ctx.is_admin:
            async with self.state.sessions() as session:
                editable = await q.editable_ids(session, ctx.user.user_id)
        return self.core.render(
            ctx,
            "admin/mirrors.html",
            {
                "rows": [(r, status_of(r)) for r in shown],
                "total": len(records),
                "filters": base,
                "statuses": STATUSES,
                "countries": countries,
                "sort": sort,
                "descending": descending,
                "sort_link": sort_link,
                "columns": (
                    ("name", "Name"),
                    ("status", "Status"),
                    ("country", "Country"),
                    ("lag", "Lag"),
                    ("capacity", "Capacity"),
                    ("updated", "Updated"),
                ),
                "editable": editable,
                "mirror_url": mirror_url,
                "now": self.state.clock(),
            },
        )

    # --- register / edit ---

    def _form(
        self,
        ctx: Ctx,
        values: dict[str, str],
        errors: dict[str, str],
        *,
        record: MirrorRecord | None,
        status: int = 200,
    ) -> Response:
        action = mirror_url(record.mirror.name, "edit") if record else f"{PREFIX}/mirrors/new"
        return self.core.render(
            ctx,
            "admin/mirror_form.html",
            {
                "fields": forms.FORM_FIELDS,
                "values": values,
                "errors": errors,
                "record": record,
                "action": action,
                "mirror_url": mirror_url,
            },
            status,
        )

    async def _after_save(self, ctx: Ctx, record: MirrorRecord, notice: str) -> Response:
        suggestion = await suggest_location(ctx, record)
        if suggestion is not None and _differs(record, suggestion[1]):
            return self.core.redirect(
                mirror_url(record.mirror.name, "location") + f"?notice={notice}"
            )
        return self.core.redirect(mirror_url(record.mirror.name) + f"?notice={notice}")

    async def new(self, ctx: Ctx) -> Response:
        ctx.extra["state"] = self.state
        if ctx.form is None:
            return self._form(ctx, forms.blank(), {}, record=None)
        values = forms.read(ctx.form)
        try:
            record = await services.add_mirror(
                self.state.sessions,
                {k: v for k, v in values.items() if v != "" or k == "name"},
                allow_private=self.state.settings.allow_private_mirrors,
                actor=ctx.actor,
            )
        except ValidationError as exc:
            return self._form(ctx, values, dict(exc.fields), record=None, status=400)
        except Conflict:
            errors = {"name": "a mirror with this name already exists"}
            return self._form(ctx, values, errors, record=None, status=400)
        return await self._after_save(ctx, record, "added")

    async def edit(self, ctx: Ctx, record: MirrorRecord) -> Response:
        current = forms.values_of(_input_of(record))
        if ctx.form is None:
            return self._form(ctx, current, {}, record=record)
        values = forms.read(ctx.form)
        changes = {k: v for k, v in values.items() if v != current.get(k)}
        if not changes:
            return self.core.redirect(mirror_url(record.mirror.name) + "?notice=unchanged")
        try:
            saved = await services.edit_mirror(
                self.state.sessions,
                record.mirror.name,
                changes,
                allow_private=self.state.settings.allow_private_mirrors,
                actor=ctx.actor,
            )
        except ValidationError as exc:
            return self._form(ctx, values, dict(exc.fields), record=record, status=400)
        except Conflict:
            errors = {"name": "a mirror with this name already exists"}
            return self._form(ctx, values, errors, record=record, status=400)
        except NotFound:
            return self.core.not_found(ctx, "The mirror was deleted meanwhile.")
        return await self._after_save(ctx, saved, "saved")

    async def location(self, ctx: Ctx, record: MirrorRecord) -> Response:
        errors: dict[str, str] = {}
        if ctx.form is not None:
            values = forms.read(ctx.form, forms.LOCATION_FIELDS)
            try:
                await services.edit_mirror(
                    self.state.sessions,
                    record.mirror.name,
                    values,
                    allow_private=self.state.settings.allow_private_mirrors,
                    actor=ctx.actor,
                )
            except ValidationError as exc:
                errors = dict(exc.fields)
            else:
                return self.core.redirect(mirror_url(record.mirror.name) + "?notice=location")
            suggestion = None
        else:
            suggestion = await suggest_location(ctx, record)
            found = suggestion[1] if suggestion else Location()
            m = record.mirror
            values = {
                "country": found.country or m.country or "",
                "continent": found.continent or m.continent or "",
                "latitude": _num(found.latitude if found.latitude is not None else m.latitude),
                "longitude": _num(found.longitude if found.longitude is not None else m.longitude),
                "asn": str(found.asn or m.asn or ""),
            }
        fields = [f for f in forms.FORM_FIELDS if f.name in forms.LOCATION_FIELDS]
        return self.core.render(
            ctx,
            "admin/location.html",
            {
                "record": record,
                "suggestion": suggestion,
                "fields": fields,
                "values": values,
                "errors": errors,
                "mirror_url": mirror_url,
            },
            400 if errors else 200,
        )

    # --- actions ---

    async def set_enabled(self, ctx: Ctx, record: MirrorRecord) -> Response:
        enabled = ctx.request.url.path.endswith("/enable")
        await services.set_enabled(
            self.state.sessions, record.mirror.name, enabled, actor=ctx.actor
        )
        notice = "enabled" if enabled else "disabled"
        return self.core.redirect(mirror_url(record.mirror.name) + f"?notice={notice}")

    async def delete(self, ctx: Ctx) -> Response:
        record = await self._record(ctx)
        if record is None:
            return self.core.not_found(ctx, "No such mirror.")
        if ctx.form is None:
            return self.core.render(
                ctx, "admin/confirm_delete.html", {"record": record, "mirror_url": mirror_url}
            )
        with contextlib.suppress(NotFound):
            await services.remove_mirror(self.state.sessions, record.mirror.name, actor=ctx.actor)
        return self.core.redirect(f"{PREFIX}/mirrors?notice=deleted")

    def _background(self, work: Awaitable[Any]) -> None:
        async def run() -> None:
            with contextlib.suppress(Exception):  # the outcome is recorded in the database
                await work

        task = asyncio.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def scan(self, ctx: Ctx, record: MirrorRecord) -> Response:
        from mirrorhub.workers.mirror_scan import scan_mirror

        self._background(scan_mirror(self.state.sessions, self.state.settings, record.mirror.name))
        await audit.write(self.state.sessions, ctx.actor, "mirror.scan", record.mirror.name)
        return self.core.redirect(mirror_url(record.mirror.name) + "?notice=scan")

    async def probe(self, ctx: Ctx, record: MirrorRecord) -> Response:
        from mirrorhub.workers.probe import probe_mirrors

        self._background(
            probe_mirrors(self.state.sessions, self.state.settings, [record.mirror.name])
        )
        await audit.write(self.state.sessions, ctx.actor, "mirror.probe", record.mirror.name)
        return self.core.redirect(mirror_url(record.mirror.name) + "?notice=probe")

    async def operators(self, ctx: Ctx) -> Response:
        record = await self._record(ctx)
        if record is None:
            return self.core.not_found(ctx, "No such mirror.")
        name, assigned = ctx.value("operator"), ctx.value("assign") == "true"
        try:
            await users.assign(
                self.state.sessions, name, record.mirror.name, assigned, actor=ctx.actor
            )
        except NotFound:
            return self.core.not_found(ctx, "No such user.")
        return self.core.redirect(mirror_url(record.mirror.name) + "?notice=operators")

    # --- the detail page ---

    async def detail(self, ctx: Ctx) -> Response:
        record = await self._record(ctx)
        if record is None:
            return self.core.not_found(ctx, "No such mirror.")
        from mirrorhub.workers.health import decode_scheme_health, offered_schemes

        try:
            page = max(1, int(ctx.request.query_params.get("page", "1")))
        except ValueError:
            page = 1
        now = datetime.fromtimestamp(self.state.clock(), UTC)
        mid = record.mirror.id
        async with self.state.sessions() as session:
            row = await q.state_row(session, mid)
            coverage = await q.coverage(
                session, mid, record.mirror.scope, record.state.last_good_scan
            )
            scans = await q.last_scans(session, mid)
            probes = await q.probe_history(
                session, mid, self.state.settings.probe_history_days, now
            )
            diffs, diff_total = await q.diffs_page(session, mid, (page - 1) * PAGE_SIZE, PAGE_SIZE)
        schemes = decode_scheme_health(row.scheme_health if row else "")
        scheme_rows = [
            (scheme, base, schemes.get(scheme)) for scheme, base in offered_schemes(record.mirror)
        ]
        all_users = await users.list_users(self.state.sessions) if ctx.is_admin else []
        return self.core.render(
            ctx,
            "admin/mirror_detail.html",
            {
                "record": record,
                "status": status_of(record),
                "row": row,
                "scheme_rows": scheme_rows,
                "coverage": coverage,
                "scans": scans,
                "charts": _probe_charts(probes),
                "diffs": diffs,
                "diff_total": diff_total,
                "page": page,
                "pages": max(1, -(-diff_total // PAGE_SIZE)),
                "may_edit": await self._may_edit(ctx, record),
                "operators": await users.operators_of(self.state.sessions, mid),
                "operator_choices": [u.name for u in all_users if u.role == "operator"],
                "mirror_url": mirror_url,
                "now": self.state.clock(),
                "utc": q.utc,
            },
        )

    # --- routing ---

    def routes(self) -> list[BaseRoute]:
        page = self.core.page
        both = ["GET", "POST"]
        return [
            Route(f"{PREFIX}/mirrors", page(self.list_page)),
            Route(f"{PREFIX}/mirrors/new", page(self.new, admin_only=True), methods=both),
            Route(f"{PREFIX}/mirrors/{{name}}", page(self.detail)),
            Route(f"{PREFIX}/mirrors/{{name}}/edit", page(self._editable(self.edit)), methods=both),
            Route(
                f"{PREFIX}/mirrors/{{name}}/location",
                page(self._editable(self.location)),
                methods=both,
            ),
            Route(
                f"{PREFIX}/mirrors/{{name}}/enable",
                page(self._editable(self.set_enabled)),
                methods=["POST"],
            ),
            Route(
                f"{PREFIX}/mirrors/{{name}}/disable",
                page(self._editable(self.set_enabled)),
                methods=["POST"],
            ),
            Route(
                f"{PREFIX}/mirrors/{{name}}/scan", page(self._editable(self.scan)), methods=["POST"]
            ),
            Route(
                f"{PREFIX}/mirrors/{{name}}/probe",
                page(self._editable(self.probe)),
                methods=["POST"],
            ),
            Route(
                f"{PREFIX}/mirrors/{{name}}/delete",
                page(self.delete, admin_only=True),
                methods=both,
            ),
            Route(
                f"{PREFIX}/mirrors/{{name}}/operators",
                page(self.operators, admin_only=True),
                methods=["POST"],
            ),
        ]


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _input_of(record: MirrorRecord) -> Any:
    from mirrorhub.validation import MirrorInput

    m = record.mirror
    r = m.restrictions
    return MirrorInput(
        name=m.name,
        http_url=m.http_url,
        https_url=m.https_url,
        rsync_url=m.rsync_url,
        country=m.country,
        continent=m.continent,
        latitude=m.latitude,
        longitude=m.longitude,
        asn=m.asn,
        networks=m.networks,
        capacity=m.capacity,
        enabled=m.enabled,
        only_own_networks=r.only_own_networks,
        only_own_asn=r.only_own_asn,
        only_own_country=r.only_own_country,
        only_own_continent=r.only_own_continent,
        excluded_countries=r.excluded_countries,
        scope=m.scope,
        contact=record.contact,
        notes=record.notes,
    )


def _probe_charts(probes: list[Any]) -> dict[str, Any]:
    """Latency per scheme and hourly availability (% of good probes), as SVG."""
    if not probes:
        return {}
    latency: dict[str, list[tuple[float, float | None]]] = {}
    hours: dict[float, list[int]] = {}
    for p in probes:
        t = q.utc(p.at).timestamp()
        latency.setdefault(p.scheme, []).append((t, p.latency_ms if p.ok else None))
        bucket = hours.setdefault(t - t % 3600, [0, 0])
        bucket[0] += p.samples if p.ok else 0
        bucket[1] += p.samples
    first, last = q.utc(probes[0].at), q.utc(probes[-1].at)
    labels = [
        (first.timestamp(), first.strftime("%m-%d %H:%M")),
        (last.timestamp(), last.strftime("%m-%d %H:%M")),
    ]
    availability = [(t, 100.0 * ok / n if n else None) for t, (ok, n) in sorted(hours.items())]
    return {
        "latency": line_chart(
            sorted(latency.items()), y_label="latency (ms)", x_labels=labels, title="Latency"
        ),
        "availability": line_chart(
            [("availability %", availability)],
            y_label="available (%)",
            x_labels=labels,
            title="Availability per hour",
        ),
    }
