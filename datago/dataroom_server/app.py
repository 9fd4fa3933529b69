"""The aiohttp application: `GET /api/images/`, `/api/images/random/` and `/media/<path>`."""

from __future__ import annotations

import asyncio
import bisect
import mimetypes
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from datago.dataroom_server.catalogue import Item, scan_folder
from datago.dataroom_server.filters import (
    UNSUPPORTED_FILTERS,
    csv,
    int_param,
    partition_check,
    predicates,
    reject_unsupported,
)

DEFAULT_FIELDS = "id,source,image_direct_url,width,height,short_edge,pixel_count,aspect_ratio"
DEFAULT_FIELDS += ",tags,attributes"
_ALL_FIELDS = frozenset(DEFAULT_FIELDS.split(",")) | {
    "latents",
    "duplicate_state",
    "coca_embedding",
}
_LIST_UNSUPPORTED = UNSUPPORTED_FILTERS | {"all_fields", "include_fields", "exclude_fields"}
_RANDOM_UNSUPPORTED = _LIST_UNSUPPORTED | {"prefix_length", "num_prefixes"}


class DataroomApi:
    """The request handlers over the catalogue of one folder."""

    def __init__(self, root: Path, seed: int | None = None) -> None:
        if not root.is_dir():
            raise NotADirectoryError(f"dataroom server root {str(root)!r} is not a directory")
        self.root = root
        self.items = scan_folder(root)
        self.ids = [item.id for item in self.items]
        self.media = set(self.ids) | {rel for item in self.items for rel in item.latents.values()}
        self.rng = random.Random(seed)

    async def list_images(self, request: web.Request) -> web.Response:
        """A page sorted by id after `cursor`; `next` while the page has results."""
        query = request.query
        reject_unsupported(query, _LIST_UNSUPPORTED)
        size = int_param(query, "page_size", 100, 1, 2000)
        checks = predicates(query) + partition_check(query)
        start = bisect.bisect_right(self.ids, query["cursor"]) if "cursor" in query else 0
        page = []
        for item in self.items[start:]:
            if all(check(item) for check in checks):
                page.append(item)
                if len(page) == size:
                    break
        next_url = str(request.url.update_query(cursor=page[-1].id)) if page else None
        return self._respond(request, page, next_url)

    async def random_images(self, request: web.Request) -> web.Response:
        """`page_size` matching items drawn at random; partitions ignored, `next` null."""
        reject_unsupported(request.query, _RANDOM_UNSUPPORTED)
        size = int_param(request.query, "page_size", 100, 1, 2000)
        checks = predicates(request.query)
        matching = [item for item in self.items if all(check(item) for check in checks)]
        return self._respond(request, self.rng.sample(matching, min(size, len(matching))), None)

    async def media_file(self, request: web.Request) -> web.StreamResponse:
        rel = request.match_info["path"]
        if rel not in self.media:
            raise web.HTTPNotFound()
        # Read in a thread, whole: a FileResponse cancelled by a client that hangs up while
        # the file opens leaks the file handle.
        loop = asyncio.get_running_loop()
        try:
            body = await loop.run_in_executor(None, (self.root / rel).read_bytes)
        except FileNotFoundError:  # deleted since the catalogue was built
            raise web.HTTPNotFound() from None
        kind = mimetypes.guess_type(rel)[0] or "application/octet-stream"
        return web.Response(body=body, content_type=kind)

    def _respond(
        self, request: web.Request, page: Iterable[Item], next_url: str | None
    ) -> web.Response:
        fields = ["id", *csv(request.query.get("fields", DEFAULT_FIELDS))]
        wanted = [name for name in dict.fromkeys(fields) if name in _ALL_FIELDS]
        types = request.query.get("return_latents")
        allowed = None if types is None else set(csv(types))
        media = f"{request.url.origin()}/media/"
        results = []
        for item in page:
            data = _render(item, media, allowed)
            results.append({name: data[name] for name in wanted})
        return web.json_response({"next": next_url, "results": results})


def _render(item: Item, media: str, latent_types: set[str] | None) -> dict[str, Any]:
    embedding = item.coca_embedding
    return {
        "id": item.id,
        "source": item.source,
        "image_direct_url": media + quote(item.id),
        "width": item.width,
        "height": item.height,
        **item.numbers(),
        "tags": item.tags,
        "attributes": item.attributes,
        "duplicate_state": item.duplicate_state,
        "coca_embedding": None if embedding is None else {"vector": embedding, "author": "local"},
        "latents": [
            {"latent_type": kind, "file_direct_url": media + quote(rel), "is_mask": "mask" in kind}
            for kind, rel in sorted(item.latents.items())
            if latent_types is None or kind in latent_types
        ],
    }


def make_app(
    root: str | Path,
    *,
    token: str | None = None,
    middlewares: Sequence[Any] = (),
    seed: int | None = None,
) -> web.Application:
    """The API over the folder `root`.

    Args:
        token: when set, `/api/` answers 401 unless `Authorization: Token <token>`.
        middlewares: aiohttp middlewares run before the token check (tests inject faults).
        seed: seeds the random endpoint.
    """

    @web.middleware
    async def check_token(request: web.Request, handler: Any) -> web.StreamResponse:
        authorization = request.headers.get("Authorization", "").split()
        if token and request.path.startswith("/api/") and authorization != ["Token", token]:
            return web.json_response({"detail": "Invalid token."}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    api = DataroomApi(Path(root), seed)
    app = web.Application(middlewares=[*middlewares, check_token])
    app.router.add_get("/api/images/", api.list_images)
    app.router.add_get("/api/images/random/", api.random_images)
    app.router.add_get("/media/{path:.+}", api.media_file)
    return app
