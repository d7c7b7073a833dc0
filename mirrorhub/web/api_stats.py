"""The statistics operations of the JSON API, over :mod:`mirrorhub.stats.queries`.

The queries are imported when a request needs them: the API works without the statistics
package's heavier imports until then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from mirrorhub.web.api_io import int_param, ok

if TYPE_CHECKING:
    from mirrorhub.web.api import Api, Handler, Params


def stats_handlers(api: Api) -> dict[str, Handler]:
    """Handlers over mirrorhub.stats.queries (imported lazily: the API works without it)."""

    def period(request: Request) -> Any:
        from mirrorhub.stats.queries import Period

        days = int_param(request.query_params, "days", 30, 1, 366)
        return Period.last_days(days, api.state.clock())

    def limit(request: Request) -> int:
        return int_param(request.query_params, "limit", 20, 1, 1000)

    def span(p: Any) -> dict[str, Any]:
        return {"from": p.first.isoformat(), "to": p.last.isoformat(), "days": p.days}

    async def summary(request: Request, params: Params, token: Any) -> Response:
        from mirrorhub.stats import queries as q

        p, n = period(request), limit(request)
        async with api.sessions() as session:
            result = await q.summary(session, p, n)
        return ok(result.to_json())

    async def files(request: Request, params: Params, token: Any) -> Response:
        from mirrorhub.stats import queries as q

        p, n = period(request), limit(request)
        async with api.sessions() as session:
            rows = await q.top_files(session, p, n)
        return ok({**span(p), "items": q.files_json(rows)})

    def per_period(query: str, to_json: str) -> Handler:
        """A handler answering ``queries.<query>`` over the period, as ``queries.<to_json>``."""

        async def handler(request: Request, params: Params, token: Any) -> Response:
            from mirrorhub.stats import queries as q

            p = period(request)
            async with api.sessions() as session:
                rows = await getattr(q, query)(session, p)
            return ok({**span(p), "items": getattr(q, to_json)(rows)})

        return handler

    async def months(request: Request, params: Params, token: Any) -> Response:
        from mirrorhub.stats import queries as q

        async with api.sessions() as session:
            rows = await q.per_month(session)
        return ok({"items": q.series_json(rows, "month")})

    return {
        "statsSummary": summary,
        "statsFiles": files,
        "statsMirrors": per_period("per_mirror", "mirrors_json"),
        "statsCountries": per_period("per_country", "countries_json"),
        "statsDays": per_period("per_day", "series_json"),
        "statsMonths": months,
    }
