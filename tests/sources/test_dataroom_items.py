"""Dataroom result items: upstream's defaults for nulls, payload routing, malformed items."""

from __future__ import annotations

import json
from typing import Any

import pytest

from datago.sources.dataroom_items import (
    MalformedItem,
    Page,
    parse_item,
    parse_page,
    payload_kind,
)


def item(**overrides: Any) -> dict[str, Any]:
    return {"id": "a/1.jpg", "source": "a", "attributes": {"score": 0.5}, **overrides}


def test_nulls_become_upstream_defaults() -> None:
    refs = parse_item(
        item(duplicate_state=None, tags=None, coca_embedding=None, latents=None, extra=1)
    )
    assert (refs.id, refs.source, refs.attributes) == ("a/1.jpg", "a", {"score": 0.5})
    assert (refs.duplicate_state, refs.tags, refs.coca_embedding) == (-1, [], [])
    assert (refs.image_url, refs.files) == (None, [])
    assert parse_item(item(coca_embedding={"vector": None})).coca_embedding == []


def test_values_and_urls_are_kept() -> None:
    refs = parse_item(
        item(
            duplicate_state=2,
            tags=["x", "y"],
            coca_embedding={"vector": [1, 0.25], "author": "m"},
            image_direct_url="http://h/media/a/1.jpg",
            latents=[
                {"latent_type": "mask", "file_direct_url": "http://h/m", "is_mask": True},
                {"latent_type": "latent_vae", "file_direct_url": "http://h/l", "is_mask": False},
                {"latent_type": "image_depth", "file_direct_url": "http://h/d"},
            ],
        )
    )
    assert (refs.duplicate_state, refs.tags, refs.coca_embedding) == (2, ["x", "y"], [1.0, 0.25])
    assert refs.image_url == "http://h/media/a/1.jpg"
    assert refs.files == [
        ("masks", "mask", "http://h/m"),
        ("latents", "latent_vae", "http://h/l"),
        ("additional_images", "image_depth", "http://h/d"),
    ]


@pytest.mark.parametrize(
    ("latent_type", "is_mask", "kind"),
    [
        ("image_background", False, "additional_images"),
        ("image_background", True, "additional_images"),  # "image" wins over is_mask
        ("latent_image_vae", False, "latents"),  # "latent_" wins over "image"
        ("latent_image_vae", True, "masks"),
        ("segmentation", True, "masks"),
        ("caption_t5", False, "latents"),
    ],
)
def test_routing_by_latent_type(latent_type: str, is_mask: bool, kind: str) -> None:
    assert payload_kind(latent_type, is_mask) == kind


@pytest.mark.parametrize(
    ("raw", "sample_id", "reason"),
    [
        ("not an object", "<unknown>", "not an object"),
        ({"source": "a", "attributes": {}}, "<unknown>", "id must be a non-empty string"),
        (item(id=7), "<unknown>", "id must be a non-empty string"),
        (item(attributes=None), "a/1.jpg", "attributes must be an object, got null"),
        (item(attributes="{}"), "a/1.jpg", "attributes must be an object, got a string"),
        (item(source=None), "a/1.jpg", "source must be a string"),
        (
            item(duplicate_state=True),
            "a/1.jpg",
            "duplicate_state must be an integer, got a boolean",
        ),
        (item(tags=[1]), "a/1.jpg", "tags must be a list of strings"),
        (
            item(coca_embedding={"vector": ["x"]}),
            "a/1.jpg",
            "^coca_embedding.vector must be a list of numbers$",
        ),
        (
            item(coca_embedding={"vector": "bad"}),
            "a/1.jpg",
            "^coca_embedding.vector must be a list, got a string$",
        ),
        (item(image_direct_url=3), "a/1.jpg", "image_direct_url must be a string, got an integer"),
        (item(latents=[None]), "a/1.jpg", "latents entries must be objects"),
        (
            item(latents=[{"latent_type": "m", "file_direct_url": None}]),
            "a/1.jpg",
            "file_direct_url must be a string, got null",
        ),
    ],
)
def test_malformed_items_name_the_problem(raw: Any, sample_id: str, reason: str) -> None:
    with pytest.raises(MalformedItem, match=reason) as caught:
        parse_item(raw)
    assert caught.value.sample_id == sample_id


def test_pages_keep_item_order_and_malformed_items() -> None:
    body = {"next": "http://h/api/images/?cursor=b", "results": [item(), {"id": "b"}]}
    page = parse_page(json.dumps(body).encode())
    assert page.next_url == "http://h/api/images/?cursor=b"
    assert [type(entry).__name__ for entry in page.items] == ["ItemRefs", "MalformedItem"]
    assert parse_page(b'{"results": []}') == Page([], None)


@pytest.mark.parametrize(
    "body", [b"<html>", b"[]", b'{"next": null}', b'{"results": {}}', b'{"results": [], "next": 1}']
)
def test_a_page_that_is_not_a_dataroom_page_is_an_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_page(body)
