"""/v1/<resource>: the warehouse's rows, filtered, in key order, a page per cursor, streamed."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import asyncpg
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response, StreamingResponse

from ..cursor import decode_cursor
from ..formats import EXTENSIONS, MEDIA_TYPES, Encoder, Format, encoder, negotiate
from ..metrics import BYTES_SERVED, ROWS_SERVED
from ..problems import ProblemError
from ..query import Plan, Selection, Shape, csv_blocks, decode_block, plan
from ..resources import FILTER_DESCRIPTIONS, RESOURCES, Resource
from ..state import ApiState, api_state, caller

log = logging.getLogger(__name__)

_FORMAT_HELP = (
    "json, csv, parquet or arrow (Arrow IPC stream); else chosen by Accept "
    "(application/json, text/csv, application/vnd.apache.parquet, application/vnd.apache.arrow.stream)"
)
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Rows in key order. `X-Next-Cursor` (and `Link: rel=next`) when a further page exists.",
        "content": {media: {} for media in MEDIA_TYPES.values()},
    },
    400: {"description": "Invalid request (problem details)"},
    401: {"description": "No key, or an unknown or revoked key (problem details)"},
    406: {"description": "No acceptable format (problem details)"},
    429: {"description": "Over the key's rate (problem details, Retry-After)"},
}


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Blocks smaller than this are decoded and encoded on the event loop: a thread hop would cost more
# than the work (a day of candles is ~0.2 MB), and many small requests would queue for the threads.
INLINE_BLOCK_BYTES = 512 * 1024


def _encode(block: bytes, shape: Shape, output: Encoder) -> tuple[bytes, int]:
    batch = decode_block(block, shape)
    return output.encode(batch), batch.num_rows


async def _body(
    state: ApiState,
    resource: Resource,
    shape: Shape,
    selection: Selection,
    page: Plan | None,
    fmt: Format,
    output: Encoder,
) -> AsyncIterator[bytes]:
    """The response body, batch by batch. Its connection is taken here, inside the body, so a
    response never started never holds one; a request without page or cursor is also planned on
    it (nothing of the plan goes in the headers then), one connection per request."""
    rows = 0
    sent = 0
    try:
        head = output.start()
        sent += len(head)
        yield head
        async with state.pool.acquire() as conn:
            if page is None:
                page = await plan(conn, resource, shape, selection)
            if not page.empty:
                async for block in csv_blocks(conn, page.sql, page.args, state.settings.chunk_bytes):
                    if len(block) < INLINE_BLOCK_BYTES:
                        chunk, count = _encode(block, shape, output)
                    else:
                        # Decoding and encoding run beside the event loop: other requests go on.
                        chunk, count = await asyncio.to_thread(_encode, block, shape, output)
                    rows += count
                    if chunk:
                        sent += len(chunk)
                        yield chunk
        tail = output.finish()
        sent += len(tail)
        yield tail
    finally:
        ROWS_SERVED.labels(resource.name, fmt.value).inc(rows)
        BYTES_SERVED.labels(resource.name, fmt.value).inc(sent)


async def serve(
    request: Request,
    resource: Resource,
    *,
    filters: dict[str, str],
    start: datetime | None,
    end: datetime | None,
    limit: int | None,
    cursor: str | None,
    format: Format | None,
) -> Response:
    state = api_state(request)
    fmt = negotiate(format, request.headers.get("accept"))
    if fmt is None:
        raise ProblemError(
            406, f"acceptable formats: {', '.join(MEDIA_TYPES.values())} (or format=)", kind="not-acceptable"
        )
    if limit is not None and limit > state.settings.max_page_rows:
        raise ProblemError(400, f"limit: at most {state.settings.max_page_rows}", kind="invalid-request")
    start, end = _utc(start), _utc(end)
    if start is not None and end is not None and end <= start:
        raise ProblemError(400, "end must be after start", kind="invalid-request")
    after = decode_cursor(resource.name, cursor, len(resource.key)) if cursor else None
    shape = await state.shape(resource)
    selection = Selection(filters=filters, start=start, end=end, after=after, limit=limit)
    page: Plan | None = None
    if limit is not None or after is not None:
        # The page's bounds (and next cursor) before the headers; a cursor's values are checked here.
        async with state.pool.acquire() as conn:
            try:
                page = await plan(conn, resource, shape, selection)
            except asyncpg.DataError as exc:
                raise ProblemError(400, f"invalid value: {exc}", kind="invalid-request") from None
    next_cursor = page.next_cursor if page is not None else None
    headers = {"Content-Disposition": f'inline; filename="{resource.name}.{EXTENSIONS[fmt]}"'}
    if page is not None and page.next_cursor is not None:
        query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("cursor", "api_key")]
        query.append(("cursor", page.next_cursor))
        headers["X-Next-Cursor"] = page.next_cursor
        headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    output = encoder(fmt, shape.schema, resource.name, next_cursor)
    return StreamingResponse(
        _body(state, resource, shape, selection, page, fmt, output), media_type=MEDIA_TYPES[fmt], headers=headers
    )


def _endpoint(resource: Resource, max_page_rows: int) -> Callable[..., Coroutine[Any, Any, Response]]:
    """A route function whose signature lists exactly this resource's query parameters, so the
    OpenAPI document says which filters each resource has."""

    async def endpoint(request: Request, **params: Any) -> Response:
        filters = {name: params[name] for name in resource.filters if params.get(name) is not None}
        return await serve(
            request,
            resource,
            filters=filters,
            start=params.get("start"),
            end=params.get("end"),
            limit=params.get("limit"),
            cursor=params.get("cursor"),
            format=params.get("format"),
        )

    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)]
    for name in resource.filters:
        parameters.append(
            inspect.Parameter(
                name, keyword, default=Query(None, description=FILTER_DESCRIPTIONS[name]), annotation=str | None
            )
        )
    if resource.time_column is not None:
        what = "overlapping" if resource.time_end_column else f"with {resource.time_column}"
        parameters += [
            inspect.Parameter(
                "start",
                keyword,
                default=Query(None, description=f"Rows {what} at or after this time (ISO 8601; UTC if no zone)"),
                annotation=datetime | None,
            ),
            inspect.Parameter(
                "end",
                keyword,
                default=Query(None, description=f"Rows {what} before this time (exclusive)"),
                annotation=datetime | None,
            ),
        ]
    parameters += [
        inspect.Parameter(
            "limit",
            keyword,
            default=Query(
                None, ge=1, description=f"Rows per page (at most {max_page_rows}); the whole range when absent"
            ),
            annotation=int | None,
        ),
        inspect.Parameter(
            "cursor",
            keyword,
            default=Query(None, description="next_cursor of the previous page"),
            annotation=str | None,
        ),
        inspect.Parameter("format", keyword, default=Query(None, description=_FORMAT_HELP), annotation=Format | None),
    ]
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = f"get_{resource.name}"
    return endpoint


def router(max_page_rows: int) -> APIRouter:
    routes = APIRouter(prefix="/v1", dependencies=[Depends(caller)])
    for resource in RESOURCES.values():
        routes.add_api_route(
            f"/{resource.name}",
            _endpoint(resource, max_page_rows),
            methods=["GET"],
            summary=resource.description,
            description=(
                f"{resource.description}. Ordered by ({', '.join(resource.key)}); keyset pages with `limit` and "
                "`cursor`; streamed in any format, whatever the range's size."
            ),
            tags=["warehouse"],
            responses=_RESPONSES,
            response_class=Response,
        )
    return routes
