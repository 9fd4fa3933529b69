"""The dataroom-compatible folder server: catalogue rules, pagination, filters, auth, media."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from datago.dataroom_server import make_app, scan_folder
from tests.helpers import Server, encode, free_port, photo


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """7 images: 4 at the top ("local"), 3 in `beach/`, with sidecars of every kind."""
    root = tmp_path / "root"
    (root / "beach" / "deep").mkdir(parents=True)
    sizes = {"a.jpg": (40, 30), "b.png": (20, 60), "c.jpg": (64, 64), "img.v2.jpg": (10, 10)}
    sizes |= {"beach/d.jpg": (50, 25), "beach/e.webp": (30, 30), "beach/deep/f.jpg": (16, 48)}
    for seed, (name, size) in enumerate(sizes.items()):
        fmt = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[name.rsplit(".", 1)[1]]
        (root / name).write_bytes(encode(photo(*size, seed=seed), fmt))
    sidecars = {
        "a.json": {"score": 0.9, "tags": ["sun", "sea"], "duplicate_state": 1},
        "b.json": {"score": 0.2, "tags": ["sea"], "coca_embedding": [0.5, 0.25]},
        "beach/d.json": {"score": 0.5, "kind": "photo", "duplicate_state": 2},
    }
    for name, data in sidecars.items():
        (root / name).write_text(json.dumps(data))
    (root / "a.txt").write_text("a red boat\n")
    (root / "a.mask.png").write_bytes(encode(photo(40, 30, seed=9).convert("L"), "PNG"))
    (root / "a.image_depth.png").write_bytes(encode(photo(40, 30, seed=8), "PNG"))
    (root / "a.latent_vae.npy").write_bytes(b"latent")
    (root / "beach" / "d.mask.png").write_bytes(encode(photo(50, 25, seed=7).convert("L"), "PNG"))
    (root / "notes.json").write_text("{}")  # no image of that name: ignored
    (root / "broken.jpg").write_bytes(b"not a jpeg")  # left out with a warning
    return root


class Client:
    """Asks a loopback `Server` of the app by path, as aiohttp's TestClient does."""

    def __init__(self, server: Server, session: aiohttp.ClientSession) -> None:
        self.root = URL(server.url.rstrip("/"))
        self.session = session
        self.responses: list[aiohttp.ClientResponse] = []

    def make_url(self, path: str) -> URL:
        return self.root.join(URL(path))

    async def get(self, path: str, **options: Any) -> aiohttp.ClientResponse:
        response = await self.session.get(self.make_url(path), **options)
        self.responses.append(response)
        return response


@contextlib.asynccontextmanager
async def asking(app: web.Application) -> AsyncIterator[Client]:
    """The app on 127.0.0.1, and a client of it; every response is released at the end."""
    async with Server(app) as server, aiohttp.ClientSession() as session:
        client = Client(server, session)
        try:
            yield client
        finally:
            for response in client.responses:
                response.release()


@pytest.fixture
async def client(folder: Path) -> AsyncIterator[Client]:
    async with asking(make_app(folder, seed=1)) as test_client:
        yield test_client


async def get(client: Client, path: str, status: int = 200, **params: Any) -> Any:
    response = await client.get(path, params=params)
    assert response.status == status, await response.text()
    return await response.json()


def test_catalogue_ids_sources_and_sidecars(folder: Path) -> None:
    items = {item.id: item for item in scan_folder(folder)}
    assert list(items) == [
        "a.jpg", "b.png", "beach/d.jpg", "beach/deep/f.jpg", "beach/e.webp", "c.jpg", "img.v2.jpg",
    ]  # fmt: skip
    a, d = items["a.jpg"], items["beach/d.jpg"]
    assert (a.source, d.source, items["beach/deep/f.jpg"].source) == ("local", "beach", "beach")
    assert a.attributes == {"width": 40, "height": 30, "score": 0.9, "caption": "a red boat"}
    assert (a.tags, a.duplicate_state, a.coca_embedding) == (["sun", "sea"], 1, None)
    assert a.latents == {
        "mask": "a.mask.png",
        "image_depth": "a.image_depth.png",
        "latent_vae": "a.latent_vae.npy",
    }
    assert d.latents == {"mask": "beach/d.mask.png"}
    assert d.attributes == {"width": 50, "height": 25, "score": 0.5, "kind": "photo"}
    assert items["b.png"].coca_embedding == [0.5, 0.25]
    assert items["c.jpg"].attributes == {"width": 64, "height": 64}


async def test_sidecar_fields_of_a_wrong_type_are_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sidecars: dict[str, Any] = {
        "nulls": {"tags": None, "duplicate_state": None, "coca_embedding": None, "score": 1},
        "wrong": {"tags": "hq", "duplicate_state": "2", "coca_embedding": "bad", "score": 2},
        "lists": {"tags": ["hq", 3], "duplicate_state": 3, "coca_embedding": [1, True]},
        "good": {"tags": ["hq"], "duplicate_state": 2, "coca_embedding": [1, 0.5]},
    }
    for seed, (name, data) in enumerate(sidecars.items()):
        (tmp_path / f"{name}.jpg").write_bytes(encode(photo(8, 6, seed=seed)))
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    items = {item.id: item for item in scan_folder(tmp_path)}
    assert list(items) == ["good.jpg", "lists.jpg", "nulls.jpg", "wrong.jpg"]
    fields = [(i.tags, i.duplicate_state, i.coca_embedding) for i in items.values()]
    assert fields == [(["hq"], 2, [1.0, 0.5])] + [([], None, None)] * 3
    assert items["wrong.jpg"].attributes == {"width": 8, "height": 6, "score": 2}
    assert items["nulls.jpg"].attributes == {"width": 8, "height": 6, "score": 1}
    left_out = sorted(r.getMessage() for r in caplog.records if "field left out" in r.message)
    assert len(left_out) == 6
    assert left_out[0].endswith(
        "lists.json: coca_embedding must be a list of numbers, got [1, True]"
    )
    assert left_out[-1].endswith("wrong.json: tags must be a list of strings, got 'hq'")
    app = make_app(tmp_path)  # no crash at startup
    async with asking(app) as test_client:
        body = await get(test_client, "/api/images/", fields="tags,coca_embedding")
    assert [item["tags"] for item in body["results"]] == [["hq"], [], [], []]
    assert body["results"][0]["coca_embedding"] == {"vector": [1.0, 0.5], "author": "local"}
    assert [item["coca_embedding"] for item in body["results"][1:]] == [None] * 3


async def test_cursor_pages_end_with_an_empty_page(client: Client, folder: Path) -> None:
    ids, url, pages = [], "/api/images/?page_size=3&fields=id", 0
    while url:
        response = await client.get(url)
        assert response.status == 200
        body = await response.json()
        pages += 1
        ids += [item["id"] for item in body["results"]]
        assert all(list(item) == ["id"] for item in body["results"])
        if body["next"] is None:
            assert body["results"] == []
            break
        assert body["next"].startswith(str(client.make_url("/api/images/")))
        url = body["next"].removeprefix(str(client.make_url("")))
        assert f"cursor={ids[-1].replace('/', '%2F')}" in url or f"cursor={ids[-1]}" in url
    assert ids == [item.id for item in scan_folder(folder)]
    assert pages == 4  # 3 + 3 + 1, then the empty page


@pytest.mark.parametrize("page_size", ["0", "2001", "x"])
async def test_bad_page_size_is_a_400(client: Client, page_size: str) -> None:
    body = await get(client, "/api/images/", 400, page_size=page_size)
    assert "page_size" in body["detail"]
    await get(client, "/api/images/random/", 400, page_size=page_size)


async def test_fields_default_selection_and_unknown_names(client: Client) -> None:
    (first,) = (await get(client, "/api/images/", page_size=1))["results"]
    assert list(first) == [
        "id", "source", "image_direct_url", "width", "height", "short_edge", "pixel_count",
        "aspect_ratio", "tags", "attributes",
    ]  # fmt: skip
    assert (first["short_edge"], first["pixel_count"], first["aspect_ratio"]) == (30, 1200, 40 / 30)
    fields = "source,bogus,latents,coca_embedding,duplicate_state"
    (a,) = (await get(client, "/api/images/", page_size=1, fields=fields))["results"]
    assert list(a) == ["id", "source", "latents", "coca_embedding", "duplicate_state"]
    base = str(client.make_url("/media/"))
    assert a["latents"] == [
        {"latent_type": "image_depth", "file_direct_url": base + "a.image_depth.png", "is_mask": False},
        {"latent_type": "latent_vae", "file_direct_url": base + "a.latent_vae.npy", "is_mask": False},
        {"latent_type": "mask", "file_direct_url": base + "a.mask.png", "is_mask": True},
    ]  # fmt: skip
    (a,) = (
        await get(client, "/api/images/", page_size=1, fields="latents", return_latents="mask")
    )["results"]
    assert [latent["latent_type"] for latent in a["latents"]] == ["mask"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"sources": "beach"}, ["beach/d.jpg", "beach/deep/f.jpg", "beach/e.webp"]),
        ({"sources__ne": "beach,local"}, []),
        ({"tags": "sun,nope"}, ["a.jpg"]),
        ({"tags": "sea"}, ["a.jpg", "b.png"]),
        ({"tags__all": "sea,sun"}, ["a.jpg"]),
        ({"tags__ne": "sun", "sources": "local"}, ["b.png", "c.jpg", "img.v2.jpg"]),
        ({"tags__ne_all": "sea,sun", "tags": "sea"}, ["b.png"]),
        ({"tags__empty": "false"}, ["a.jpg", "b.png"]),
        ({"tags__empty": "0"}, ["a.jpg", "b.png"]),
        ({"tags__empty": "No"}, ["a.jpg", "b.png"]),
        ({"tags__empty": "1", "sources": "local"}, ["c.jpg", "img.v2.jpg"]),
        ({"tags__empty": "TRUE", "sources": "local"}, ["c.jpg", "img.v2.jpg"]),
        ({"tags__empty": "yes", "sources": "local"}, ["c.jpg", "img.v2.jpg"]),
        ({"has_attributes": "score,kind"}, ["beach/d.jpg"]),
        ({"lacks_attributes": "score", "sources": "local"}, ["c.jpg", "img.v2.jpg"]),
        ({"has_masks": "mask"}, ["a.jpg", "beach/d.jpg"]),
        ({"has_latents": "latent_vae,mask"}, ["a.jpg"]),
        ({"lacks_latents": "mask", "sources": "local"}, ["b.png", "c.jpg", "img.v2.jpg"]),
        ({"short_edge__gte": "30"}, ["a.jpg", "beach/e.webp", "c.jpg"]),
        ({"pixel_count__lt": "900"}, ["beach/deep/f.jpg", "img.v2.jpg"]),
        ({"aspect_ratio__gt": "1.5"}, ["beach/d.jpg"]),
        ({"duplicate_state": "2"}, ["beach/d.jpg"]),
        ({"attributes": "score__gte:0.5"}, ["a.jpg", "beach/d.jpg"]),
        ({"attributes": "score__lt:0.8,kind:photo"}, ["beach/d.jpg"]),
        ({"attributes": "caption__ne:x"}, ["a.jpg"]),
        ({"duplicate_state": "None", "sources": "local"}, ["b.png", "c.jpg", "img.v2.jpg"]),
        ({"unknown_param": "1", "sources": "local", "attributes": "score:0.2"}, ["b.png"]),
        # Not dataroom names on images/: ignored, as dataroom does.
        ({"short_edge__ne": "30", "sources": "local"}, ["a.jpg", "b.png", "c.jpg", "img.v2.jpg"]),
        ({"prefix_length": "3", "sources": "local"}, ["a.jpg", "b.png", "c.jpg", "img.v2.jpg"]),
    ],
)
async def test_filters(client: Client, params: dict[str, Any], expected: list[str]) -> None:
    body = await get(client, "/api/images/", fields="id", **params)
    assert [item["id"] for item in body["results"]] == expected


@pytest.mark.parametrize(
    "params",
    [
        {"short_edge__gte": "big"},
        {"duplicate_state": "3"},
        {"tags__empty": "maybe"},
        {"tags__empty": ""},
        {"attributes": "score"},
        {"attributes": "score__near:1"},
        {"partitions_count": "2"},
        {"partitions_count": "1", "partition": "0"},
        {"partitions_count": "49", "partition": "0"},
        {"partitions_count": "4", "partition": "4"},
    ],
)
async def test_bad_filter_values_are_a_400(client: Client, params: dict[str, Any]) -> None:
    detail = (await get(client, "/api/images/", 400, **params))["detail"]
    assert any(key in detail for key in params), detail


@pytest.mark.parametrize(
    ("path", "key", "value"),
    [
        ("images/", "source", "beach"),
        ("images/", "source__empty", "true"),
        ("images/", "aspect_ratio_fraction", "4:3"),
        ("images/", "coca_embedding__empty", "false"),
        ("images/", "datasets", "x"),
        ("images/", "datasets__ne_all", "x"),
        ("images/", "date_created__gte", "2024-01-01"),
        ("images/", "date_updated__lt", "2024-01-01"),
        ("images/", "all_fields", "true"),
        ("images/", "exclude_fields", "tags"),
        ("images/random/", "include_fields", "latents"),
        ("images/random/", "num_prefixes", "10"),
        ("images/random/", "datasets__empty", "true"),
    ],
)
async def test_dataroom_parameters_not_supported_here_are_a_400(
    client: Client, path: str, key: str, value: str
) -> None:
    body = await get(client, f"/api/{path}", 400, **{key: value, "sources": "local"})
    assert body["detail"] == (
        f"{key} is a dataroom parameter this server does not support "
        "(see datago.dataroom_server for those it does)"
    )


@pytest.mark.parametrize("cmp", ["match", "match_phrase", "prefix", "not_prefix"])
async def test_text_attribute_comparators_are_a_400(client: Client, cmp: str) -> None:
    body = await get(client, "/api/images/", 400, attributes=f"kind__{cmp}:photo")
    assert body["detail"] == f"attributes comparator '{cmp}' is not supported by this server"
    body = await get(client, "/api/images/", 400, attributes="kind__near:photo")
    assert body["detail"] == (
        "attributes filter must be name[__cmp]:value with cmp in eq, ne, lt, lte, gt, gte, "
        "got 'kind__near:photo'"
    )


@pytest.mark.parametrize("count", [2, 3, 7, 48])
async def test_partitions_are_disjoint_and_complete(
    client: Client, folder: Path, count: int
) -> None:
    parts = [
        [
            item["id"]
            for item in (
                await get(client, "/api/images/", partitions_count=count, partition=index)
            )["results"]
        ]
        for index in range(count)
    ]
    every = [sample_id for part in parts for sample_id in part]
    assert sorted(every) == [item.id for item in scan_folder(folder)]


async def test_random_pages_draw_matching_items_without_next(
    client: Client,
) -> None:
    seen: set[str] = set()
    for _ in range(20):
        body = await get(client, "/api/images/random/", page_size=2, sources="local")
        assert body["next"] is None
        assert len(body["results"]) == 2
        seen |= {item["id"] for item in body["results"]}
    assert seen == {"a.jpg", "b.png", "c.jpg", "img.v2.jpg"}
    body = await get(client, "/api/images/random/", page_size=5, tags="nope")
    assert body == {"next": None, "results": []}


async def test_media_bytes_and_unknown_paths(client: Client, folder: Path) -> None:
    (item,) = (await get(client, "/api/images/", page_size=1, sources="beach"))["results"]
    response = await client.get(item["image_direct_url"].removeprefix(str(client.make_url(""))))
    assert response.status == 200
    assert response.content_type == "image/jpeg"
    assert await response.read() == (folder / "beach" / "d.jpg").read_bytes()
    for path in ("/media/nope.jpg", "/media/notes.json", "/media/../root/a.jpg"):
        assert (await client.get(path)).status == 404
    (folder / "beach" / "d.jpg").unlink()  # after the catalogue was built
    assert (await client.get("/media/beach/d.jpg")).status == 404


async def test_token_is_required_for_the_api_only(folder: Path) -> None:
    app = make_app(folder, token="t0k")
    async with asking(app) as test_client:
        for headers in ({}, {"Authorization": "Token nope"}, {"Authorization": "Bearer t0k"}):
            response = await test_client.get("/api/images/", headers=headers)
            assert response.status == 401
            assert await response.json() == {"detail": "Invalid token."}
        for header in ("Token t0k", "Token  t0k"):  # upstream sends two spaces on later pages
            response = await test_client.get("/api/images/", headers={"Authorization": header})
            assert response.status == 200
            assert len((await response.json())["results"]) == 7
        assert (await test_client.get("/media/a.jpg")).status == 200


def test_root_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        make_app(tmp_path / "missing")


def test_runs_as_a_module(folder: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "datago.dataroom_server", "--root", str(folder)]
    command += ["--port", str(port), "--token", "t"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/images/?fields=id&sources=beach",
            headers={"Authorization": "Token t"},
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    body = json.load(response)
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.1)
        assert [item["id"] for item in body["results"]] == [
            "beach/d.jpg",
            "beach/deep/f.jpg",
            "beach/e.webp",
        ]
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_a_big_folder_pages_quickly(tmp_path: Path) -> None:
    image = encode(photo(8, 8))
    for index in range(1000):
        (tmp_path / f"{index:05d}.jpg").write_bytes(image)
    async with asking(make_app(tmp_path)) as test_client:
        start, url, count = time.monotonic(), "/api/images/?page_size=100&fields=id", 0
        while url:
            body = await (await test_client.get(url)).json()
            count += len(body["results"])
            url = body["next"] and body["next"].removeprefix(str(test_client.make_url("")))
        assert count == 1000
        assert time.monotonic() - start < 5
