"""`source_type: "db"`: pages of the dataroom API, each item's files downloaded concurrently.

Pages: `images/` is read by following each absolute `next` link verbatim (with the token)
until it is null; the next page is fetched while the current one's items download.
`random_sampling` asks `images/random/` again and again, a sampling with replacement that
ends at the client's `limit` or at an empty page (upstream stops after one page), and raises
`SourceError` once `RANDOM_GIVE_UP_ITEMS` samples in a row were skipped (malformed, not
downloaded or not decodable: `stats.skips_in_a_row`), else a dataset with no good item
would be drawn forever. Dataroom's random view ignores partitions, so every rank then draws
from the whole filtered set.

Splits: rank x torch worker, see `dataroom_query.SplitPlan`. Pages carry
`Authorization: Token <DATAROOM_API_KEY>` (no header when the key is empty); media URLs are
fetched without it (dataroom serves them from storage, often presigned, where it would not
belong).

Failures: every GET gets `DATAGO_MAX_RETRIES` attempts, with backoff, against 5xx, 408,
429, resets, truncated bodies and answers slower than `PAGE_TIMEOUT_S` (a page) or
`HTTP_TIMEOUT_S` (a file): a silent API fails after about attempts x PAGE_TIMEOUT_S. A
page that still fails, or whose body is not `{"results": [...], "next": url | null}`,
raises `SourceError` after the samples of the pages before it and counts a
`stats.source_errors` (a 401/403 names the token, or says that it is not set), so a
cut-short pass never looks like the end of the data. A malformed item, or a sample whose
image or latent file cannot be downloaded (a 404, or attempts spent), is counted in `stats`
as skipped and the stream goes on. Samples come out in page order; at most
max(32, 4 x DATAGO_MAX_TASKS) of them download at once, and the next page is read only when
they leave room.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from datago.config import DbSourceConfig, Environment
from datago.errors import SourceError
from datago.sources.base import RawSample, SourceContext
from datago.sources.dataroom_items import ItemRefs, MalformedItem, Page, parse_page
from datago.sources.dataroom_query import SplitPlan, first_page_url, plan_split
from datago.sources.http import HttpClient, HttpStatusError, is_retryable

PAGE_TIMEOUT_S = 20.0
"""Seconds one page GET may take, headers and body, before it fails and is retried."""
HTTP_TIMEOUT_S = 60.0
"""Seconds one image or latent file GET may take (files can be large), likewise."""
RANDOM_GIVE_UP_ITEMS = 200
"""Random sampling stops with an error after this many skipped samples in a row."""
_MIN_WINDOW = 32
_T = TypeVar("_T")


async def iter_dataroom(
    config: DbSourceConfig, ctx: SourceContext
) -> AsyncGenerator[RawSample, None]:
    """Yield one raw sample (downloaded bytes and metadata) per dataroom item of this part."""
    api_url = _api_url(ctx.environment)
    plan = plan_split(config, ctx.workers)
    reader = _Reader(config, ctx, plan)
    producer = asyncio.create_task(reader.produce(first_page_url(api_url, config, plan.server)))
    try:
        while True:
            entry = await reader.pending.get()
            if isinstance(entry, _End):
                if entry.error is not None:
                    raise entry.error
                return
            sample = await entry
            if sample is not None:
                yield sample
    finally:
        await reader.close(producer)


def _api_url(environment: Environment) -> str:
    url = environment.dataroom_api_url.strip()
    if not url:
        raise SourceError(
            "source_type 'db' needs the dataroom API: set DATAROOM_API_URL "
            "(e.g. http://127.0.0.1:8000/api/) and DATAROOM_API_KEY"
        )
    if not url.startswith(("http://", "https://")):
        raise SourceError(f"DATAROOM_API_URL must be an http(s) URL, got {url!r}")
    return url if url.endswith("/") else f"{url}/"


@dataclass(frozen=True, slots=True)
class _End:
    """The last entry of `pending`: the end of the pages, or why they stopped."""

    error: Exception | None = None


class _Reader:
    """Walks the pages and starts one download task per item, in order, `window` ahead."""

    def __init__(self, config: DbSourceConfig, ctx: SourceContext, plan: SplitPlan) -> None:
        self.random = config.random_sampling
        self.keeps = plan.keeps
        self.stats = ctx.stats
        self.executor = ctx.executor
        key = ctx.environment.dataroom_api_key
        self.headers = {"Authorization": f"Token {key}"} if key else {}
        attempts = ctx.environment.max_retries
        self.http = HttpClient(attempts=attempts, timeout_s=HTTP_TIMEOUT_S)
        window = max(_MIN_WINDOW, 4 * ctx.environment.max_tasks)
        self.pending: asyncio.Queue[asyncio.Task[RawSample | None] | _End] = asyncio.Queue(window)
        self.tasks: set[asyncio.Task[Any]] = set()

    async def produce(self, first_url: str) -> None:
        """Fill `pending` with download tasks, then with an `_End`."""
        end = _End()
        try:
            await self._paginate(first_url)
        except Exception as exc:
            end = _End(exc)
        await self.pending.put(end)

    async def _paginate(self, first_url: str) -> None:
        number = 1
        fetch: asyncio.Task[Page] | None = self._spawn(self._page(first_url, number))
        seen = {hash(first_url)}  # a next link back to one of them would loop forever
        loop_error: SourceError | None = None
        while fetch is not None:
            page = await fetch
            next_url = page.next_url
            if self.random:
                self._check_random_progress(number)
                next_url = first_url if page.items else None
            elif next_url is not None and hash(next_url) in seen:
                loop_error = SourceError(
                    f"dataroom page {number} links back to an earlier page: {next_url}"
                )
                self.stats.source_error(f"dataroom page {number + 1}", str(loop_error))
                next_url = None
            elif next_url is not None:
                seen.add(hash(next_url))
            number += 1
            fetch = self._spawn(self._page(next_url, number)) if next_url else None
            for item in page.items:
                await self._dispatch(item)
        if loop_error is not None:
            raise loop_error

    def _check_random_progress(self, number: int) -> None:
        """Raise when random pages keep coming but none of their items is usable."""
        if self.stats.skips_in_a_row < RANDOM_GIVE_UP_ITEMS:
            return
        error = SourceError(
            f"dataroom random sampling gave up after {number} pages: the last "
            f"{self.stats.skips_in_a_row} samples drawn were all skipped (malformed, not "
            "downloaded or not decodable), "
            "none gave a sample (see the skipped samples in the log)"
        )
        self.stats.source_error("dataroom random sampling", str(error))
        raise error

    async def _page(self, url: str, number: int) -> Page:
        """One page; a page lost for good is counted in `stats` and raised."""
        try:
            return await self._read_page(url, number)
        except SourceError as exc:
            self.stats.source_error(f"dataroom page {number}", str(exc))
            raise

    async def _read_page(self, url: str, number: int) -> Page:
        """One page, parsed in the executor; raises `SourceError` once retries are spent."""
        try:
            body = await self.http.get_bytes(url, self.headers, timeout_s=PAGE_TIMEOUT_S)
        except HttpStatusError as exc:
            if exc.status in (401, 403):
                said = f" (the API said: {exc.detail})" if exc.detail else ""
                if not self.headers:
                    raise SourceError(
                        f"the dataroom API wants a key (HTTP {exc.status}) for {url}: "
                        f"DATAROOM_API_KEY is not set{said}"
                    ) from exc
                raise SourceError(
                    f"the dataroom API refused the token (HTTP {exc.status}) for {url}: "
                    f"check DATAROOM_API_KEY{said}"
                ) from exc
            tries = self.http.attempts if is_retryable(exc) else 1
            raise SourceError(
                f"dataroom page {number} failed after {tries} attempt(s): {exc}"
            ) from exc
        except SourceError as exc:
            hint = " (is DATAROOM_API_URL right and the API up?)" if number == 1 else ""
            raise SourceError(f"dataroom page {number} failed: {exc}{hint}") from exc
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, parse_page, body)
        except ValueError as exc:
            raise SourceError(f"dataroom page {number} ({url}): {exc}") from exc

    async def _dispatch(self, item: ItemRefs | MalformedItem) -> None:
        if isinstance(item, MalformedItem):
            self.stats.skip(item.sample_id, f"malformed dataroom item: {item}")
        elif self.random or self.keeps(item.id):
            await self.pending.put(self._spawn(self._download(item)))

    async def _download(self, refs: ItemRefs) -> RawSample | None:
        """The sample with its image and latent files, or None (counted) if one is missing."""
        urls = [url for _, _, url in refs.files]
        if refs.image_url is not None:
            urls.insert(0, refs.image_url)
        try:
            payloads = await self._get_all(urls)
        except SourceError as exc:
            self.stats.skip(refs.id, f"download failed: {exc}")
            return None
        image = payloads.pop(0) if refs.image_url is not None else None
        sample = RawSample(
            id=refs.id,
            source=refs.source,
            image=image,
            attributes=refs.attributes,
            duplicate_state=refs.duplicate_state,
            coca_embedding=refs.coca_embedding,
            tags=refs.tags,
        )
        routes = {
            "masks": sample.masks,
            "additional_images": sample.additional_images,
            "latents": sample.latents,
        }
        for (kind, latent_type, _), data in zip(refs.files, payloads, strict=True):
            routes[kind][latent_type] = data
        return sample

    async def _get_all(self, urls: list[str]) -> list[bytes]:
        if len(urls) <= 1:
            return [await self.http.get_bytes(url) for url in urls]
        downloads = [asyncio.create_task(self.http.get_bytes(url)) for url in urls]
        try:
            return list(await asyncio.gather(*downloads))
        finally:
            for download in downloads:
                download.cancel()  # the others, once one has failed

    def _spawn(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def close(self, producer: asyncio.Task[None]) -> None:
        """Cancel the producer and every download, wait for them, close the HTTP session."""
        queued = [self.pending.get_nowait() for _ in range(self.pending.qsize())]
        waiting = [producer, *self.tasks, *(t for t in queued if isinstance(t, asyncio.Task))]
        for task in waiting:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiting, return_exceptions=True)
        await self.http.close()
