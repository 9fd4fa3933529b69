"""The `db` source against a real dataroom-compatible server on 127.0.0.1, with faults injected."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from datago.config import DbSourceConfig, Environment
from datago.dataroom_server import make_app
from datago.errors import SourceError
from datago.sources.base import Partition, RawSample, SourceContext, Split
from datago.sources.dataroom import DbSource
from datago.stats import Stats
from tests.helpers import Fault, Logged, Server, always, encode, free_port, photo, write_catalogue

TOKEN = "s3cret"


@dataclass
class Api:
    """The folder server's API as a test sees it: its URL, the requests it got (path, query,
    Authorization) and the faults to inject, as the fault rule of its loopback `Server`."""

    url: str = ""
    server: Server | None = None
    faults: list[tuple[Callable[[Logged], bool], int]] = field(default_factory=list)
    """Each answers the first request it matches with its status, once."""
    rewrite: Callable[[dict[str, Any]], None] | None = None
    media_delay_s: float = 0.0

    def __call__(self, seen: Logged) -> Fault | None:
        for index, (matches, status) in enumerate(self.faults):
            if matches(seen):
                del self.faults[index]
                return Fault.error(status, b"injected fault")
        if seen.path.startswith("/media/") and self.media_delay_s:
            return Fault.delay(self.media_delay_s)
        if self.rewrite is not None and seen.path.startswith("/api/"):
            return Fault.change(self._rewritten)
        return None

    def _rewritten(self, body: bytes) -> bytes:
        page = json.loads(body)
        assert self.rewrite is not None
        self.rewrite(page)
        return json.dumps(page).encode()

    @property
    def requests(self) -> list[tuple[str, dict[str, str], str]]:
        assert self.server is not None
        return [(s.path, s.query, s.authorization or "") for s in self.server.requests]

    def pages(self) -> list[dict[str, str]]:
        return [query for path, query, _ in self.requests if path.startswith("/api/")]

    @property
    def media_in_flight(self) -> int:
        assert self.server is not None
        return self.server.in_flight("/media/")

    @property
    def media_most_in_flight(self) -> int:
        assert self.server is not None
        return self.server.most_at_once("/media/")


@pytest.fixture
def catalogue(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return write_catalogue(tmp_path / "data")


@contextlib.asynccontextmanager
async def serving(root: Path, token: str | None = TOKEN) -> AsyncIterator[Api]:
    api = Api()
    async with Server(make_app(root, token=token), fault=api) as server:
        api.server, api.url = server, server.url + "api/"
        yield api


@pytest.fixture
async def api(tmp_path: Path, catalogue: dict[str, Any]) -> AsyncIterator[Api]:
    async with serving(tmp_path / "data") as recorder:
        yield recorder


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


def context(api: Api, executor: ThreadPoolExecutor, key: str = TOKEN, **env: Any) -> SourceContext:
    environment = Environment(max_retries=3, dataroom_api_url=api.url, dataroom_api_key=key)
    return SourceContext(environment=replace(environment, **env), executor=executor, stats=Stats())


def db(**keys: Any) -> DbSourceConfig:
    return DbSourceConfig(**{"sources": "alpha,beta", "page_size": 10, **keys})


async def iter_dataroom(
    config: DbSourceConfig, ctx: SourceContext, workers: Partition | None = None
) -> AsyncGenerator[RawSample, None]:
    """The raw samples of the db node for part `workers` of the config's rank."""
    split = Split(config.rank, max(config.world_size, 1), workers or Partition())
    stream = DbSource().open(config, split, ctx, None)
    async with contextlib.aclosing(stream):
        async for raw, _ in stream:
            yield raw


async def collect(
    config: DbSourceConfig,
    ctx: SourceContext,
    into: list[RawSample] | None = None,
    stop: int = 0,
    workers: Partition | None = None,
) -> list[RawSample]:
    """Every sample of the stream (or the first `stop`), within 20 s."""
    samples = [] if into is None else into
    stream = iter_dataroom(config, ctx, workers)
    async with asyncio.timeout(20), contextlib.aclosing(stream):
        async for sample in stream:
            samples.append(sample)
            if len(samples) == stop:
                break
    return samples


def ids_of(catalogue: dict[str, Any], *sources: str) -> list[str]:
    return sorted(key for key in catalogue if key.split("/")[0] in sources)


async def test_pages_are_followed_to_the_end_each_item_once(
    api: Api, executor: ThreadPoolExecutor, catalogue: dict[str, Any], tmp_path: Path
) -> None:
    ctx = context(api, executor)
    samples = await collect(db(require_images=True), ctx)
    assert [s.id for s in samples] == ids_of(catalogue, "alpha", "beta")  # 45, in page order
    pages = api.pages()
    assert len(pages) == 6  # 5 pages of results, then the empty last page
    assert pages[0] == {
        "fields": "id,source,attributes,height,width,tags,image_direct_url,duplicate_state",
        "sources": "alpha,beta",
        "page_size": "10",
    }
    assert [p.get("cursor") for p in pages] == [None] + [samples[i].id for i in (9, 19, 29, 39, 44)]
    assert {auth for path, _, auth in api.requests if path.startswith("/api/")} == {"Token s3cret"}
    assert {auth for path, _, auth in api.requests if path.startswith("/media/")} == {""}
    for sample in samples:
        meta = catalogue[sample.id]
        assert sample.image == (tmp_path / "data" / sample.id).read_bytes()
        assert sample.source == sample.id.split("/")[0]
        assert sample.attributes_dict == {k: meta[k] for k in ("score", "width", "height")}
        assert sample.tags == meta["tags"]
        assert sample.duplicate_state == meta.get("duplicate_state", -1)
        assert (sample.masks, sample.additional_images, sample.latents) == ({}, {}, {})
        assert sample.coca_embedding == []
    assert ctx.stats.skipped == 0


async def test_filters_are_sent_and_applied_by_the_server(
    api: Api, executor: ThreadPoolExecutor, catalogue: dict[str, Any]
) -> None:
    config = db(
        sources="alpha,beta,gamma",
        sources_ne="beta",
        tags="odd",
        min_short_edge=30,
        attributes="score__gte:0.2",
        duplicate_state=-1,
        has_attributes="score",
    )
    samples = await collect(config, context(api, executor))
    assert api.pages()[0] == {
        "fields": "id,source,attributes,height,width,tags",
        "sources": "alpha,beta,gamma",
        "sources__ne": "beta",
        "page_size": "10",
        "tags": "odd",
        "has_attributes": "score",
        "short_edge__gte": "30",
        "attributes": "score__gte:0.2",
    }
    expected = [
        key
        for key, meta in sorted(catalogue.items())
        if not key.startswith("beta/")
        and meta["tags"] == ["odd"]
        and min(meta["width"], meta["height"]) >= 30
        and meta["score"] >= 0.2
    ]
    assert expected
    assert [s.id for s in samples] == expected
    assert all(s.image is None and s.duplicate_state == -1 for s in samples)


@pytest.mark.parametrize("world_size", [2, 3, 4])
async def test_rank_partitions_are_disjoint_and_complete(
    api: Api, executor: ThreadPoolExecutor, catalogue: dict[str, Any], world_size: int
) -> None:
    parts = [
        [s.id for s in await collect(db(rank=rank, world_size=world_size), context(api, executor))]
        for rank in range(world_size)
    ]
    every = [sample_id for part in parts for sample_id in part]
    assert sorted(every) == ids_of(catalogue, "alpha", "beta")  # complete, nothing twice
    assert all(parts)
    assert {(p["partitions_count"], p["partition"]) for p in api.pages()} == {
        (str(world_size), str(rank)) for rank in range(world_size)
    }


@pytest.mark.parametrize(("world_size", "workers"), [(2, 3), (1, 50), (2, 30)])
async def test_workers_inside_ranks_split_disjoint_and_complete(
    api: Api, executor: ThreadPoolExecutor, catalogue: dict[str, Any], world_size: int, workers: int
) -> None:
    every: list[str] = []
    for rank in range(world_size):
        for worker in range(workers):
            ctx = context(api, executor)
            config = db(rank=rank, world_size=world_size)
            every += [s.id for s in await collect(config, ctx, workers=Partition(worker, workers))]
    assert sorted(every) == ids_of(catalogue, "alpha", "beta")
    counts = {p.get("partitions_count") for p in api.pages()}
    # Up to 48 parts the server splits; beyond, it splits ranks and the client splits workers.
    expected_count = world_size * workers if world_size * workers <= 48 else world_size
    assert counts == {str(expected_count) if expected_count > 1 else None}


async def test_random_sampling_keeps_drawing_pages(
    api: Api, executor: ThreadPoolExecutor, catalogue: dict[str, Any]
) -> None:
    samples = await collect(db(random_sampling=True, page_size=5), context(api, executor), stop=23)
    assert len(samples) == 23
    assert {s.id for s in samples} <= set(ids_of(catalogue, "alpha", "beta"))
    assert all(path == "/api/images/random/" for path, _, _ in api.requests if "api" in path)
    assert len(api.pages()) >= 5  # one page of 5 is not the end: pages are drawn again
    assert all("cursor" not in page for page in api.pages())


async def test_random_sampling_ends_on_an_empty_page(
    api: Api, executor: ThreadPoolExecutor
) -> None:
    samples = await collect(db(random_sampling=True, tags="nope"), context(api, executor))
    assert samples == []
    assert len(api.pages()) == 1


async def test_random_sampling_gives_up_when_no_item_gives_a_sample(
    tmp_path: Path, catalogue: dict[str, Any], executor: ThreadPoolExecutor
) -> None:
    root = tmp_path / "data"
    config = db(sources="gamma", random_sampling=True, require_images=True)
    async with serving(root) as api:
        for sample_id in ids_of(catalogue, "gamma"):
            (root / sample_id).unlink()  # in the catalogue, gone from the disk
        ctx = context(api, executor)
        start = time.monotonic()
        with pytest.raises(
            SourceError,
            match=r"random sampling gave up after \d+ pages: the last \d+ samples drawn were "
            r"all skipped \(malformed, not downloaded or not decodable\)",
        ):
            await collect(config, ctx)
    assert time.monotonic() - start < 10
    assert ctx.stats.skip_reasons == {"download failed": ctx.stats.skipped}
    assert 200 <= ctx.stats.skipped <= 200 + 32 + 10  # the limit, the window, one page
    assert ctx.stats.source_errors == 1
    assert 40 <= len(api.pages()) <= 50  # pages of 5 items


async def test_wrong_token_is_a_source_error_at_once(
    api: Api, executor: ThreadPoolExecutor
) -> None:
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"refused the token \(HTTP 401\).*DATAROOM_API_KEY"):
        await collect(db(), context(api, executor, key="wrong"))
    assert time.monotonic() - start < 2
    assert len(api.pages()) == 1  # not retried


async def test_an_unset_key_refused_by_the_api_says_it_is_not_set(
    api: Api, executor: ThreadPoolExecutor
) -> None:
    with pytest.raises(
        SourceError,
        match=r"^the dataroom API wants a key \(HTTP 401\) for http://127.0.0.1:\d+/api/images/"
        r"\?.*: DATAROOM_API_KEY is not set \(the API said: Invalid token.\)$",
    ):
        await collect(db(), context(api, executor, key=""))
    assert [auth for _, _, auth in api.requests] == [""]


async def test_tags_empty_with_other_tag_filters_is_warned_once_a_pass(
    api: Api,
    executor: ThreadPoolExecutor,
    catalogue: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    samples = await collect(db(tags_empty="false", tags_ne="odd"), context(api, executor))
    assert [s.id for s in samples] == [
        key for key in ids_of(catalogue, "alpha", "beta") if catalogue[key]["tags"] == ["even"]
    ]
    assert len(api.pages()) == 4  # 23 samples: pages of 10, 10, 3, then the empty one
    warnings = [r.getMessage() for r in caplog.records if "tags_empty" in r.getMessage()]
    assert warnings == [
        "source_config.tags_empty='false' is combined with tags_ne='odd': the API applies "
        "every tag filter together, so the selection may be empty"
    ]
    caplog.clear()
    await collect(db(tags_empty="true"), context(api, executor))
    assert [r for r in caplog.records if "tags_empty" in r.getMessage()] == []


async def test_without_a_key_no_authorization_header_is_sent(
    tmp_path: Path, catalogue: dict[str, Any], executor: ThreadPoolExecutor
) -> None:
    async with serving(tmp_path / "data", token=None) as open_api:
        samples = await collect(db(sources="gamma"), context(open_api, executor, key=""))
    assert [s.id for s in samples] == ids_of(catalogue, "gamma")
    assert {auth for _, _, auth in open_api.requests} == {""}


async def test_missing_api_url_is_a_clear_source_error(executor: ThreadPoolExecutor) -> None:
    ctx = context(Api(url=""), executor)
    with pytest.raises(SourceError, match="DATAROOM_API_URL"):
        await collect(db(), ctx)


async def test_unreachable_api_is_a_source_error_after_retries(
    executor: ThreadPoolExecutor,
) -> None:
    ctx = context(Api(url=f"http://127.0.0.1:{free_port()}/api/"), executor)
    with pytest.raises(SourceError, match=r"page 1 failed.*3 attempt.*DATAROOM_API_URL"):
        await collect(db(), ctx)


async def test_a_silent_api_fails_within_the_page_timeout(executor: ThreadPoolExecutor) -> None:
    async with Server.files({}, fault=always(Fault.hang())) as silent:  # nothing ever answers
        ctx = context(Api(url=silent.url + "api/"), executor, page_timeout_s=0.3)
        start = time.monotonic()
        with pytest.raises(
            SourceError,
            match=r"page 1 failed: GET .* failed after 3 attempt\(s\): "
            r"no complete answer within 0.3s \(TimeoutError\)",
        ):
            await collect(db(), ctx)
    assert 0.9 <= time.monotonic() - start < 3  # 3 x 0.3 s, and the backoff between
    assert Environment().page_timeout_s <= 20 < Environment().file_timeout_s  # the defaults


async def test_files_may_take_longer_than_a_page(
    api: Api,
    executor: ThreadPoolExecutor,
    catalogue: dict[str, Any],
) -> None:
    api.media_delay_s = 0.5
    ctx = context(api, executor, page_timeout_s=0.2)
    samples = await collect(db(sources="gamma", require_images=True), ctx)
    assert [s.id for s in samples] == ids_of(catalogue, "gamma")
    assert ctx.stats.skipped == 0
    assert len([path for path, _, _ in api.requests if path.startswith("/media/")]) == 5


async def test_a_page_error_is_retried_without_loss_or_duplicate(
    api: Api, executor: ThreadPoolExecutor, catalogue: dict[str, Any]
) -> None:
    def third_page(request: Logged) -> bool:
        return request.query.get("cursor") == "alpha/img_019.jpg"

    api.faults = [(third_page, 500), (third_page, 503)]
    samples = await collect(db(), context(api, executor))
    assert [s.id for s in samples] == ids_of(catalogue, "alpha", "beta")
    assert [p.get("cursor") for p in api.pages()].count("alpha/img_019.jpg") == 3


async def test_a_later_page_lost_for_good_raises_after_the_earlier_samples(
    api: Api, executor: ThreadPoolExecutor, catalogue: dict[str, Any]
) -> None:
    def third_page(request: Logged) -> bool:
        return request.query.get("cursor") == "alpha/img_019.jpg"

    api.faults = [(third_page, 500)] * 3
    samples: list[RawSample] = []
    with pytest.raises(SourceError, match=r"page 3 failed.*HTTP 500"):
        await collect(db(), context(api, executor), into=samples)
    assert [s.id for s in samples] == ids_of(catalogue, "alpha", "beta")[:20]  # no page twice


async def test_a_page_that_is_not_json_is_a_source_error(
    api: Api, executor: ThreadPoolExecutor
) -> None:
    api.faults = [(lambda request: request.query.get("cursor") == "alpha/img_009.jpg", 200)]
    samples: list[RawSample] = []
    with pytest.raises(
        SourceError, match=r"page 2 \(http://127.0.0.1:\d+/api/images/\?.*\): the body is not JSON"
    ):
        await collect(db(), context(api, executor), into=samples)
    assert len(samples) == 10


async def test_a_missing_image_is_skipped_and_counted(
    api: Api, executor: ThreadPoolExecutor, catalogue: dict[str, Any]
) -> None:
    api.faults = [(lambda request: request.path == "/media/beta/img_030.jpg", 404)]
    ctx = context(api, executor)
    samples = await collect(db(require_images=True), ctx)
    assert [s.id for s in samples] == [
        key for key in ids_of(catalogue, "alpha", "beta") if key != "beta/img_030.jpg"
    ]
    assert ctx.stats.skipped == 1
    assert ctx.stats.skip_reasons == {"download failed": 1}
    assert [path for path, _, _ in api.requests].count("/media/beta/img_030.jpg") == 1


async def test_an_image_deleted_after_the_server_started_is_one_skip_not_retried(
    tmp_path: Path, catalogue: dict[str, Any], executor: ThreadPoolExecutor
) -> None:
    gone = "beta/img_030.jpg"
    async with serving(tmp_path / "data") as api:
        (tmp_path / "data" / gone).unlink()
        ctx = context(api, executor)
        samples = await collect(db(require_images=True), ctx)
    assert [s.id for s in samples] == [k for k in ids_of(catalogue, "alpha", "beta") if k != gone]
    assert (ctx.stats.skipped, ctx.stats.skip_reasons) == (1, {"download failed": 1})
    assert [path for path, _, _ in api.requests].count(f"/media/{gone}") == 1  # a 404


async def test_malformed_items_are_skipped_and_counted(
    api: Api, executor: ThreadPoolExecutor, catalogue: dict[str, Any]
) -> None:
    broken = {"alpha/img_001.jpg", "alpha/img_004.jpg", "alpha/img_012.jpg", "beta/img_040.jpg"}

    def corrupt(body: dict[str, Any]) -> None:
        for item in body["results"]:
            if item["id"] == "alpha/img_001.jpg":
                item["attributes"] = None
            elif item["id"] == "alpha/img_004.jpg":
                item["tags"] = "odd"
            elif item["id"] == "alpha/img_012.jpg":
                item["latents"] = [{"latent_type": "x", "file_direct_url": None}]
            elif item["id"] == "beta/img_040.jpg":
                del item["id"]
            elif item["id"] == "beta/img_041.jpg":
                item["coca_embedding"] = {"vector": None}  # upstream's null vector: []

    api.rewrite = corrupt
    ctx = context(api, executor)
    samples = await collect(db(require_images=True), ctx)
    wanted = [key for key in ids_of(catalogue, "alpha", "beta") if key not in broken]
    assert [s.id for s in samples] == wanted
    assert ctx.stats.skip_reasons == {"malformed dataroom item": 4}


async def test_downloads_run_concurrently_within_a_bounded_window(
    api: Api, executor: ThreadPoolExecutor
) -> None:
    api.media_delay_s = 0.1
    start = time.monotonic()
    samples = await collect(db(require_images=True, page_size=50), context(api, executor))
    assert len(samples) == 45
    assert time.monotonic() - start < 2.5  # one at a time would take 4.5 s
    assert 8 <= api.media_most_in_flight <= 34  # the window is 32 (+ one being queued)


async def test_the_event_loop_is_never_blocked(
    api: Api, executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    # Above the 50 ms of the house rule: a shared 2-core CI box stalls a step now and then.
    loop.slow_callback_duration = 0.1
    gc.collect()
    gc.disable()  # a full collection in a long test session can take tens of ms by itself
    try:
        samples = await collect(db(require_images=True, page_size=50), context(api, executor))
    finally:
        gc.enable()
        loop.set_debug(False)
    assert len(samples) == 45
    assert [r.message for r in caplog.records if "Executing" in r.message] == []


async def test_closing_the_stream_cancels_downloads_and_closes_the_session(
    api: Api, executor: ThreadPoolExecutor
) -> None:
    api.media_delay_s = 30
    current = asyncio.current_task()
    stream = iter_dataroom(db(require_images=True), context(api, executor))
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.3)  # pages read and downloads started
    assert api.media_in_flight > 1
    first.cancel()
    start = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await first
    await stream.aclose()
    assert time.monotonic() - start < 1
    assert [t for t in asyncio.all_tasks() if t is not current] == []
    await asyncio.sleep(0.05)
    assert api.media_in_flight == 0  # the server saw the connections go


@pytest.fixture
def latent_folder(tmp_path: Path) -> Path:
    root = tmp_path / "latent"
    (root / "alpha").mkdir(parents=True)
    for name in ("cat", "dog"):
        (root / "alpha" / f"{name}.jpg").write_bytes(encode(photo(40, 30, len(name))))
    (root / "alpha" / "cat.mask.png").write_bytes(encode(photo(40, 30, 5).convert("L"), "PNG"))
    (root / "alpha" / "cat.image_depth.png").write_bytes(encode(photo(40, 30, 6), "PNG"))
    (root / "alpha" / "cat.latent_vae.npy").write_bytes(b"\x93NUMPY raw latent bytes")
    (root / "alpha" / "cat.json").write_text(
        json.dumps({"coca_embedding": [0.5, 1, -2.25], "caption_len": 3, "ok": True})
    )
    return root / "alpha"


@pytest.fixture
async def latent_api(latent_folder: Path) -> AsyncIterator[Api]:
    async with serving(latent_folder.parent) as recorder:
        yield recorder


async def test_masks_additional_images_and_latents_are_routed(
    latent_folder: Path, latent_api: Api, executor: ThreadPoolExecutor
) -> None:
    api = latent_api
    config = db(
        require_images=True,
        require_embeddings=True,
        has_masks="mask",
        has_latents="latent_vae,image_depth",
    )
    samples = await collect(config, context(api, executor))
    assert api.pages()[0]["fields"] == (
        "id,source,attributes,height,width,tags,image_direct_url,latents,"
        "coca_embedding,duplicate_state"
    )
    assert api.pages()[0]["return_latents"] == "latent_vae,image_depth,mask"
    assert [s.id for s in samples] == ["alpha/cat.jpg"]  # the only one with those latents
    (cat,) = samples
    assert cat.image == (latent_folder / "cat.jpg").read_bytes()
    assert cat.masks == {"mask": (latent_folder / "cat.mask.png").read_bytes()}
    assert cat.additional_images == {
        "image_depth": (latent_folder / "cat.image_depth.png").read_bytes()
    }
    assert cat.latents == {"latent_vae": b"\x93NUMPY raw latent bytes"}
    assert cat.coca_embedding == [0.5, 1.0, -2.25]
    assert cat.attributes_dict == {"width": 40, "height": 30, "caption_len": 3, "ok": True}


async def test_a_missing_latent_file_skips_its_sample(
    latent_api: Api, executor: ThreadPoolExecutor
) -> None:
    api = latent_api
    api.faults = [(lambda request: request.path.endswith("cat.latent_vae.npy"), 404)]
    ctx = context(api, executor)
    assert await collect(db(require_images=True, has_latents="latent_vae"), ctx) == []
    assert ctx.stats.skip_reasons == {"download failed": 1}
