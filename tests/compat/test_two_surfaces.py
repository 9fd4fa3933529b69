"""Where the Rust wheel's `get_sample()` returns None (a config or a source it cannot use,
a stalled source), ours does too, logging why once; our surface raises the same error."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import datago
from datago import ConfigError, DatagoClient, SourceError
from tests.helpers import Server, file_config, write_images


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


UNUSABLE_CONFIGS: list[tuple[str, Callable[[Path], str], str]] = [
    ("bad JSON", lambda root: "{not json", "config is not valid JSON"),
    (
        "rank >= world_size",
        lambda root: json.dumps(file_config(root, rank=2, world_size=2)),
        "source_config.rank must be in [0, world_size), got 2 of 2",
    ),
    ("limit 0", lambda root: json.dumps(file_config(root, limit=0)), "limit must be > 0, got 0"),
    (
        "no source_config",
        lambda root: json.dumps({"source_type": "file", "limit": 3}),
        "source_config is required",
    ),
]


@pytest.mark.parametrize(("case", "config_of", "reason"), UNUSABLE_CONFIGS)
def test_a_config_the_wheel_cannot_use_gives_none_and_ours_raises(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    case: str,
    config_of: Callable[[Path], str],
    reason: str,
) -> None:
    write_images(tmp_path, 2)
    text = config_of(tmp_path)
    with caplog.at_level(logging.ERROR, logger="datago"):
        client = DatagoClient(text)  # never raises, as the wheel's constructor
        client.start()
        assert client.get_sample() is None and client.get_sample_auto_convert() is None
        client.stop()
    assert len(errors(caplog)) == 1 and reason in errors(caplog)[0]  # logged once
    assert isinstance(client.error, ConfigError) and reason in str(client.error)
    for strict in (lambda: list(client), lambda: client.config, lambda: client.state_dict()):
        with pytest.raises(ConfigError, match=re.escape(reason)):
            strict()
    with pytest.raises(ConfigError), DatagoClient(text):
        pass
    if case != "bad JSON":
        with pytest.raises(ConfigError, match=re.escape(reason)):  # ours: a dict raises at once
            DatagoClient(json.loads(text))


async def test_async_surface_raises_the_deferred_config_error(tmp_path: Path) -> None:
    client = DatagoClient(json.dumps(file_config(tmp_path, limit=0)))
    with pytest.raises(ConfigError, match="limit must be > 0"):
        await client.aget_sample()
    with pytest.raises(ConfigError):
        async for _ in client:
            pass


def test_str_config_keyword_and_one_config_only(tmp_path: Path) -> None:
    paths = write_images(tmp_path, 3)
    client = DatagoClient(str_config=json.dumps(file_config(tmp_path)))
    assert [client.get_sample().id for _ in range(3)] == paths  # type: ignore[union-attr]
    assert client.get_sample() is None
    client.stop()
    assert datago.live_cleanup_threads() == 0  # stop() joins: nothing left to reap
    with pytest.raises(TypeError, match="one config"):
        DatagoClient()
    with pytest.raises(TypeError, match="one config"):
        DatagoClient(file_config(tmp_path), str_config="{}")


def test_a_fatal_source_error_ends_the_wheels_stream_and_ours_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = json.dumps(file_config(tmp_path / "missing"))
    with caplog.at_level(logging.ERROR, logger="datago"):
        client = DatagoClient(text)
        assert client.get_sample() is None and client.get_sample() is None
    assert errors(caplog) == [
        f"source_config.root_path {str(tmp_path / 'missing')!r} does not exist; "
        "get_sample() returns None (see client.error)"
    ]
    assert isinstance(client.error, SourceError)
    client.start()  # a new pass fails the same way; ours raises it
    with pytest.raises(SourceError, match="does not exist"):
        list(client)


@pytest.mark.parametrize("unset", ["DATAROOM_API_URL", "every shard lost"])
def test_db_without_api_url_and_lost_shards_give_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unset: str
) -> None:
    monkeypatch.delenv("DATAROOM_API_URL", raising=False)
    config: dict[str, Any] = {"source_config": {"sources": "A", "page_size": 10}}
    if unset != "DATAROOM_API_URL":
        config = {"source_type": "webdataset", "source_config": {"url": str(tmp_path / "x.tar")}}
    client = DatagoClient(json.dumps(config))
    assert client.get_sample() is None
    assert isinstance(client.error, SourceError)
    with pytest.raises(SourceError), DatagoClient(config) as strict:
        next(iter(strict))


def test_a_stalled_source_times_out_with_the_wheels_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def stalled(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(1.5)  # no answer within the client's sample timeout
        return web.Response(status=404)

    with Server.handler(stalled) as server:
        config = {"source_type": "webdataset", "source_config": {"url": server.url + "s.tar"}}
        client = DatagoClient(json.dumps(config), sample_timeout=0.5)
        with caplog.at_level(logging.WARNING, logger="datago"):
            assert client.get_sample() is None
            assert client.get_sample() is None  # the pass was stopped, as the wheel's
        client.close()
        deadline = time.monotonic() + 5
        while server.in_flight() and time.monotonic() < deadline:  # let the server answer
            time.sleep(0.05)
    assert [r.getMessage() for r in caplog.records] == [
        "Timeout waiting for sample after 0.5s: pass stopped, returning None"
    ]
    assert isinstance(client.error, TimeoutError)
    assert DatagoClient(json.dumps(config)).sample_timeout == 300  # the wheel's default


def test_configs_the_wheel_accepts_construct_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = write_images(tmp_path, 2)
    config = file_config(tmp_path, image_config={"image_format": "jpeg", "pre_encode_imags": 1})
    config["_comment"] = "keys the wheel ignores"
    config["source_config"]["page_size"] = 5000  # type: ignore[index]
    monkeypatch.setenv("DATAGO_MAX_TASKS", "0")
    with caplog.at_level(logging.WARNING, logger="datago"):
        client = DatagoClient(json.dumps(config))
        assert [client.get_sample().id for _ in paths] == paths  # type: ignore[union-attr]
    assert [r.getMessage() for r in caplog.records] == [
        "unknown config keys ignored: 'source_config.page_size' (a key of source_type 'db'); "
        "'image_config.pre_encode_imags' (did you mean 'pre_encode_images'?); '_comment'",
        "environment variable DATAGO_MAX_TASKS=0 is below 1; using 1",
    ]
    client.stop()


def test_the_sample_timeout_is_the_wheels_surface_only(tmp_path: Path) -> None:
    paths = write_images(tmp_path, 3)
    with DatagoClient(file_config(tmp_path), sample_timeout=1e-6) as client:
        assert [s.id for s in client] == paths  # iteration waits as long as it takes
