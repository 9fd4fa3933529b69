"""`source_type: "db"`: pages of the dataroom API, each item's files downloaded concurrently.

Behaviour (pages, splits, random sampling, retries, skips, resume) is in the guide's
"The db source"; the query is built in `dataroom_query`, items parsed in `dataroom_items`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncGenerator, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from datago.config import DbSourceConfig, Environment
from datago.errors import SourceError
from datago.sources.base import Position, RawSample, SourceContext, Split, check_state
from datago.sources.dataroom_items import ItemRefs, MalformedItem, Page, parse_page
from datago.sources.dataroom_query import SplitPlan, first_page_url, plan_split, query_params
from datago.storage import Storages

if TYPE_CHECKING:
    from datago.storage.http import HttpClient

RANDOM_GIVE_UP_ITEMS = 200
"""Random sampling stops with an error after this many skipped samples in a row."""
_MIN_WINDOW = 32
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class DbPosition:
    """Right after item `taken - 1` of page `number`, whose URL is `page`."""

    page: str
    number: int
    taken: int

    def state(self) -> dict[str, Any]:
        return {"page": self.page, "number": self.number, "taken": self.taken}


class DbSource:
    """The `db` node."""

    source_type = "db"
    config_type = DbSourceConfig
    seeks = True

    def resume_refusal(self, config: DbSourceConfig) -> str | None:
        if config.random_sampling:
            return (
                "the db source's random_sampling draws from the server (images/random/), "
                "which cannot be replayed on resume"
            )
        return None

    def fingerprint(self, config: DbSourceConfig, split: Split) -> dict[str, Any]:
        query = urlencode(query_params(config, plan_split(split).server))
        digest = hashlib.blake2b(query.encode(), digest_size=8).hexdigest()
        return {"query": f"images/ digest {digest}"}

    async def open(
        self,
        config: DbSourceConfig,
        split: Split,
        context: SourceContext,
        state: Mapping[str, Any] | None,
    ) -> AsyncGenerator[tuple[RawSample, Position | None], None]:
        """One raw sample (downloaded bytes and metadata) per dataroom item of this part."""
        api_url = _api_url(context.environment)
        plan = plan_split(split)
        page, number, skip = first_page_url(api_url, config, plan.server), 1, 0
        if state is not None:
            page = check_state(state, "page", str)
            number, skip = check_state(state, "number", int), check_state(state, "taken", int)
        reader = _Reader(config, context, plan)
        producer = asyncio.create_task(reader.produce(page, number, skip))
        try:
            while True:
                entry = await reader.pending.get()
                if isinstance(entry, _End):
                    if entry.error is not None:
                        raise entry.error
                    return
                download, position = entry
                sample = await download
                if sample is not None:
                    yield sample, position
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


_Pending = tuple[asyncio.Task[RawSample | None], DbPosition]


class _Reader:
    """Walks the pages and starts one download task per item, in order, `window` ahead."""

    def __init__(self, config: DbSourceConfig, ctx: SourceContext, plan: SplitPlan) -> None:
        from datago.storage.http import HttpClient  # aiohttp is imported when a pass needs it

        environment = ctx.environment
        self.random = config.random_sampling
        self.keeps = plan.keeps
        self.stats = ctx.stats
        self.executor = ctx.executor
        self.page_timeout_s = environment.page_timeout_s
        key = environment.dataroom_api_key
        self.headers = {"Authorization": f"Token {key}"} if key else {}
        self.http: HttpClient = HttpClient(
            attempts=environment.max_retries,
            timeout_s=environment.page_timeout_s,
            backoff_base_s=environment.backoff_base_s,
            on_receive=ctx.stats.fetched,
        )
        # the images and latents: no token, it is not theirs
        self.storages = Storages(ctx.storage_options(timeout_s=environment.file_timeout_s))
        window = max(_MIN_WINDOW, 4 * environment.max_tasks)
        self.pending: asyncio.Queue[_Pending | _End] = asyncio.Queue(window)
        self.tasks: set[asyncio.Task[Any]] = set()

    async def produce(self, first_url: str, number: int, skip: int) -> None:
        """Fill `pending` with download tasks from page `number` at `first_url`, after its
        first `skip` items, then with an `_End`."""
        end = _End()
        try:
            await self._paginate(first_url, number, skip)
        except Exception as exc:
            end = _End(exc)
        await self.pending.put(end)

    async def _paginate(self, first_url: str, number: int, skip: int) -> None:
        fetch: asyncio.Task[Page] | None = self._spawn(self._page(first_url, number))
        seen = {hash(first_url)}  # a next link back to one of them would loop forever
        loop_error: SourceError | None = None
        url = first_url
        while fetch is not None:
            page = await fetch
            page_url, page_number, next_url = url, number, page.next_url
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
            url = next_url or url
            for index, item in enumerate(page.items[skip:], start=skip + 1):
                await self._dispatch(item, DbPosition(page_url, page_number, index))
            skip = 0
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
        from datago.storage.http import HttpStatusError, is_retryable

        try:
            body = await self.http.get_bytes(url, self.headers)
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

    async def _dispatch(self, item: ItemRefs | MalformedItem, position: DbPosition) -> None:
        if isinstance(item, MalformedItem):
            self.stats.skip("malformed dataroom item", item.sample_id, str(item))
        elif self.random or self.keeps(item.id):
            await self.pending.put((self._spawn(self._download(item)), position))

    async def _download(self, refs: ItemRefs) -> RawSample | None:
        """The sample with its image and latent files, or None (counted) if one is missing."""
        urls = [url for _, _, url in refs.files]
        if refs.image_url is not None:
            urls.insert(0, refs.image_url)
        try:
            payloads = await self._get_all(urls)
        except SourceError as exc:
            self.stats.skip("download failed", refs.id, str(exc))
            return None
        image = payloads.pop(0) if refs.image_url is not None else None
        sample = RawSample(
            id=refs.id,
            source=refs.source,
            image=image,
            attributes_dict=refs.attributes,
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
            return [await self.storages.for_url(url).read(url) for url in urls]
        downloads = [asyncio.create_task(self.storages.for_url(url).read(url)) for url in urls]
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
        waiting = [producer, *self.tasks, *(e[0] for e in queued if not isinstance(e, _End))]
        for task in waiting:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiting, return_exceptions=True)
        try:
            await self.http.close()
        finally:
            await self.storages.close()
