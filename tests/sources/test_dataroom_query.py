"""The dataroom query built from a `db` config, and the rank x worker split plan."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from datago.config import ClientConfig, DbSourceConfig
from datago.sources.base import Partition, Split
from datago.sources.dataroom_query import (
    SplitPlan,
    first_page_url,
    page_fields,
    plan_split,
    query_params,
)


def db(**keys: Any) -> DbSourceConfig:
    config = ClientConfig.from_dict({"source_config": {"sources": "A,B", "page_size": 10, **keys}})
    assert isinstance(config.source_config, DbSourceConfig)
    return config.source_config


def test_fields_start_as_upstream_and_name_tags_once() -> None:
    assert page_fields(db()) == "id,source,attributes,height,width,tags,duplicate_state"
    every = db(
        require_images=True,
        require_embeddings=True,
        has_masks="m",
        tags="t",
        tags_all="u",
        tags_ne="v",
        tags_ne_all="w",
        tags_empty="true",
    )
    assert page_fields(every) == (
        "id,source,attributes,height,width,tags,image_direct_url,latents,coca_embedding,"
        "duplicate_state"
    )  # upstream appends ",tags" once per tag filter
    assert page_fields(db(duplicate_state=-1)) == "id,source,attributes,height,width,tags"
    assert "latents" in page_fields(db(has_latents="l"))


def test_every_key_maps_to_its_parameter_in_upstream_order() -> None:
    config = db(
        sources_ne="C",
        tags="t1,t2",
        tags_all="ta",
        tags_ne="tn",
        tags_ne_all="tna",
        tags_empty="false",
        has_attributes="ha",
        lacks_attributes="la",
        has_masks="hm",
        lacks_masks="lm",
        has_latents="hl",
        lacks_latents="ll",
        min_short_edge=256,
        max_short_edge=2048,
        min_pixel_count=1000,
        max_pixel_count=9000,
        duplicate_state=1,
        attributes="aesthetic_score__gte:0.5",
        rank=1,
        world_size=4,
    )
    assert [key for key, _ in query_params(config, Partition(1, 4))] == [
        "fields", "sources", "sources__ne", "page_size", "tags", "tags__all", "tags__ne",
        "tags__ne_all", "tags__empty", "has_attributes", "lacks_attributes", "has_masks",
        "lacks_masks", "has_latents", "lacks_latents", "return_latents", "short_edge__gte",
        "short_edge__lte", "pixel_count__gte", "pixel_count__lte", "duplicate_state",
        "attributes", "partitions_count", "partition",
    ]  # fmt: skip
    params = dict(query_params(config, Partition(1, 4)))
    assert params["return_latents"] == "hl,hm"
    assert (params["short_edge__gte"], params["pixel_count__lte"]) == ("256", "9000")
    assert (params["partitions_count"], params["partition"]) == ("4", "1")


def test_only_set_values_are_sent() -> None:
    assert query_params(db(), Partition()) == [
        ("fields", "id,source,attributes,height,width,tags,duplicate_state"),
        ("sources", "A,B"),
        ("page_size", "10"),
    ]
    negative = dict(query_params(db(min_short_edge=-1, duplicate_state=-1), Partition()))
    assert "short_edge__gte" not in negative and "duplicate_state" not in negative


@pytest.mark.parametrize(
    ("latents", "masks", "expected"),
    [("a", "", "a"), ("a,b", "m", "a,b,m"), ("", "m", "m"), ("", "", None)],
)
def test_return_latents_has_no_trailing_comma(
    latents: str, masks: str, expected: str | None
) -> None:
    params = dict(query_params(db(has_latents=latents, has_masks=masks), Partition()))
    assert params.get("return_latents") == expected


def test_first_page_url_and_random_endpoint() -> None:
    url = first_page_url("http://127.0.0.1:8000/api/", db(require_images=True), Partition())
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("127.0.0.1:8000", "/api/images/")
    assert parse_qsl(parts.query)[:2] == [
        ("fields", "id,source,attributes,height,width,tags,image_direct_url,duplicate_state"),
        ("sources", "A,B"),
    ]
    random_url = first_page_url("http://h/api/", db(random_sampling=True), Partition(0, 2))
    assert random_url.startswith("http://h/api/images/random/?")
    assert dict(parse_qsl(urlsplit(random_url).query))["partitions_count"] == "2"


@pytest.mark.parametrize(
    ("rank", "world_size", "workers", "plan"),
    [
        (0, 0, Partition(), SplitPlan(Partition(), Partition())),
        (1, 4, Partition(), SplitPlan(Partition(1, 4), Partition())),
        (1, 2, Partition(2, 3), SplitPlan(Partition(5, 6), Partition())),
        (0, 1, Partition(7, 50), SplitPlan(Partition(), Partition(7, 50))),
        (1, 2, Partition(3, 30), SplitPlan(Partition(1, 2), Partition(3, 30))),
        (60, 64, Partition(), SplitPlan(Partition(), Partition(60, 64))),
    ],
)
def test_split_goes_to_the_server_up_to_48_parts(
    rank: int, world_size: int, workers: Partition, plan: SplitPlan
) -> None:
    assert plan_split(Split(rank, max(world_size, 1), workers)) == plan


def test_client_split_is_disjoint_complete_and_balanced() -> None:
    ids = [f"source/img_{i:05d}.jpg" for i in range(2000)]
    plans = [SplitPlan(Partition(), Partition(k, 50)) for k in range(50)]
    owners = [[k for k, plan in enumerate(plans) if plan.keeps(i)] for i in ids]
    assert all(len(owner) == 1 for owner in owners)  # each id in exactly one part
    sizes = [sum(owner == [k] for owner in owners) for k in range(50)]
    assert min(sizes) >= 20 and max(sizes) <= 60  # about 40 each
