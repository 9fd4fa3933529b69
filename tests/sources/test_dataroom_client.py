"""End to end: `DatagoClient` with `source_type: "db"` on the folder server over loopback."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from datago import DatagoClient, SourceError
from datago.dataroom_server import make_app
from datago.sample import LatentPayload
from tests.helpers import Server, encode, photo, write_catalogue

TOKEN = "e2e-token"


@contextlib.asynccontextmanager
async def serving(root: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """The folder server on 127.0.0.1, named by DATAROOM_API_URL and DATAROOM_API_KEY."""
    async with Server(make_app(root, token=TOKEN, seed=0)) as server:
        monkeypatch.setenv("DATAROOM_API_URL", server.url + "api/")
        monkeypatch.setenv("DATAROOM_API_KEY", TOKEN)
        yield


def pixels(path: Path) -> np.ndarray[Any, np.dtype[np.uint8]]:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


async def test_client_reads_the_api_with_an_exact_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalogue = write_catalogue(tmp_path / "data")
    config = {
        "source_type": "db",
        "source_config": {"sources": "alpha,beta", "page_size": 10, "require_images": True},
        "limit": 17,
    }
    async with serving(tmp_path / "data", monkeypatch), DatagoClient(config) as client:
        samples = [sample async for sample in client]
    wanted = sorted(key for key in catalogue if not key.startswith("gamma/"))[:17]
    assert [s.id for s in samples] == wanted
    for sample in samples:
        meta = catalogue[sample.id]
        assert (sample.image.width, sample.image.height) == (meta["width"], meta["height"])
        assert sample.image.to_numpy().shape == (meta["height"], meta["width"], 3)
        assert sample.attributes_dict["score"] == meta["score"]
        assert sample.duplicate_state == meta.get("duplicate_state", -1)
    assert client.stats.samples == 17


async def test_random_sampling_runs_until_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalogue = write_catalogue(tmp_path / "data")
    source = {"sources": "gamma", "page_size": 2, "random_sampling": True}
    config = {"source_type": "db", "source_config": source, "limit": 25}
    async with serving(tmp_path / "data", monkeypatch), DatagoClient(config) as client:
        samples = [sample async for sample in client]
    assert len(samples) == 25  # upstream stops after one page (2 samples here)
    gamma = {key for key in catalogue if key.startswith("gamma/")}
    assert {s.id for s in samples} == gamma  # 5 items drawn 25 times: each one seen


async def test_client_decodes_masks_and_additional_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "data" / "alpha"
    folder.mkdir(parents=True)
    (folder / "cat.png").write_bytes(encode(photo(48, 32, 1), "PNG"))
    (folder / "cat.mask.png").write_bytes(encode(photo(48, 32, 2).convert("L"), "PNG"))
    (folder / "cat.image_bg.png").write_bytes(encode(photo(48, 32, 3), "PNG"))
    (folder / "cat.latent_x.bin").write_bytes(b"\x00\x01raw")
    config = {
        "source_type": "db",
        "source_config": {
            "sources": "alpha",
            "page_size": 5,
            "require_images": True,
            "has_masks": "mask",
            "has_latents": "image_bg,latent_x",
        },
    }
    async with serving(tmp_path / "data", monkeypatch), DatagoClient(config) as client:
        (sample,) = [sample async for sample in client]
    np.testing.assert_array_equal(sample.image.to_numpy(), pixels(folder / "cat.png"))
    np.testing.assert_array_equal(
        sample.additional_images["image_bg"].to_numpy(), pixels(folder / "cat.image_bg.png")
    )
    mask = sample.masks["mask"].to_numpy()
    with Image.open(folder / "cat.mask.png") as reference:
        assert mask.shape[:2] == (32, 48)
        np.testing.assert_array_equal(mask[..., 0], np.asarray(reference))
    assert sample.latents == {"latent_x": LatentPayload(b"\x00\x01raw")}


async def test_client_raises_a_wrong_token_at_the_consumer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_catalogue(tmp_path / "data")
    config = {"source_type": "db", "source_config": {"sources": "alpha", "page_size": 10}}
    async with serving(tmp_path / "data", monkeypatch):
        monkeypatch.setenv("DATAROOM_API_KEY", "wrong")
        async with DatagoClient(config) as client:
            with pytest.raises(SourceError, match="DATAROOM_API_KEY"):
                await client.aget_sample()


def test_client_without_api_url_raises_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATAROOM_API_URL", raising=False)
    config = {"source_type": "db", "source_config": {"sources": "alpha", "page_size": 10}}
    with DatagoClient(config) as client, pytest.raises(SourceError, match="DATAROOM_API_URL"):
        next(iter(client))


def random_gamma(limit: int) -> dict[str, Any]:
    source = {"sources": "gamma", "page_size": 5, "require_images": True, "random_sampling": True}
    return {"source_type": "db", "source_config": source, "limit": limit}


@pytest.mark.parametrize("fault", ["undecodable", "missing"])
async def test_random_sampling_gives_up_when_no_drawn_item_decodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    root = tmp_path / "data"
    catalogue = write_catalogue(root)
    async with serving(root, monkeypatch):
        for sample_id in (key for key in catalogue if key.startswith("gamma/")):
            if fault == "missing":
                (root / sample_id).unlink()  # in the catalogue, gone from the disk
            else:
                (root / sample_id).write_bytes(b"served, but not an image")
        start = time.monotonic()
        with DatagoClient(random_gamma(5)) as client:
            with pytest.raises(SourceError, match=r"random sampling gave up after \d+ pages"):
                await client.aget_sample()
            stats = client.stats
    assert time.monotonic() - start < 15
    reason = "DecodeError" if fault == "undecodable" else "download failed"
    assert stats.skip_reasons == {reason: stats.skipped}
    assert stats.skipped >= 200 and stats.samples == 0


async def test_random_sampling_goes_on_while_some_drawn_items_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    catalogue = write_catalogue(root)
    gamma = sorted(key for key in catalogue if key.startswith("gamma/"))
    async with serving(root, monkeypatch):
        for sample_id in gamma[1:]:
            (root / sample_id).write_bytes(b"served, but not an image")
        with DatagoClient(random_gamma(60)) as client:  # ~240 skips on the way: over 200
            ids = [sample.id async for sample in client]
            stats = client.stats
    assert ids == [gamma[0]] * 60
    assert stats.source_errors == 0 and stats.skipped > 200


async def test_a_resumed_client_continues_after_the_last_delivered_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_catalogue(tmp_path / "data")
    source = {"sources": "alpha,beta", "page_size": 10, "require_images": True}
    config = {"source_type": "db", "source_config": source, "limit": 30}
    async with serving(tmp_path / "data", monkeypatch):
        with DatagoClient(config) as client:
            full = [sample.id async for sample in client]
        with DatagoClient(config) as client:
            head = [(await client.aget_sample()).id for _ in range(13)]  # type: ignore[union-attr]
            state = client.state_dict()
        with DatagoClient(config) as client:
            client.load_state_dict(state)
            rest = [sample.id async for sample in client]
    assert len(full) == 30
    assert head + rest == full
