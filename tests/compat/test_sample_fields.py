"""`Sample` fields and `get_sample_auto_convert()` as the Rust wheel gives them, per source:
files, webdataset shards over loopback HTTP, and the dataroom server."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from datago import DatagoClient, Sample
from tests.compat.conftest import CAPTION, WDS_SAMPLES, db_config


def drain(client: DatagoClient) -> list[Sample]:
    samples = []
    while (sample := client.get_sample()) is not None:
        samples.append(sample)
    return samples


def test_file_ids_are_json_quoted_paths_and_attributes_are_empty_json(files: Path) -> None:
    config = {"source_type": "file", "source_config": {"root_path": str(files)}, "limit": 10}
    samples = drain(DatagoClient(json.dumps(config)))
    ids = sorted(sample.id for sample in samples)
    root = str(files)
    assert ids == [  # [wheel]: the path as JSON text; quotes and backslashes escaped, é kept
        f'"{root}/a rgb.png"',
        f'"{root}/b grey.png"',
        f'"{root}/c \\"q\\" \\\\\u00e9.png"',
        f'"{root}/e.jpg"',
        f'"{root}/f deep.png"',
        f'"{root}/sub/d la.png"',
    ]
    assert all(sample.attributes == "{}" and sample.attributes_dict == {} for sample in samples)
    assert all(sample.source == "filesystem" and sample.latents == {} for sample in samples)
    assert {json.loads(sample.id) for sample in samples} == {
        str(path) for path in files.rglob("*") if path.is_file()
    }


def test_relative_root_path_gives_relative_ids(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(files)
    for root, expected in (("sub/", '"sub/d la.png"'), ("./sub", '"./sub/d la.png"')):  # [wheel]
        config = {"source_type": "file", "source_config": {"root_path": root}}
        assert [s.id for s in drain(DatagoClient(json.dumps(config)))] == [expected]


def test_webdataset_attributes_are_the_members_text_and_bad_members_keep_the_sample(
    shards_url: str,
) -> None:
    config = {"source_type": "webdataset", "source_config": {"url": shards_url}, "limit": 10}
    client = DatagoClient(json.dumps(config))
    samples = {sample.id: sample for sample in drain(client)}
    assert list(samples) == ["s1", "s2", "s3", "s4"]  # bad JSON and a bad png kept [wheel]
    members = dict(WDS_SAMPLES)["s1"]
    first = samples["s1"]
    assert json.loads(first.attributes) == {  # raw text per member [wheel]
        "json": json.dumps(CAPTION),
        "cls": "3\n",
        "txt": "a text",
    }
    assert first.source == shards_url.replace("{0..0}", "0")
    with Image.open(io.BytesIO(members["png"])) as png:
        np.testing.assert_array_equal(np.asarray(first.additional_images["png"]), np.asarray(png))
    assert samples["s2"].attributes == '{"json":"{bad json"}'
    assert samples["s3"].additional_images == {} and samples["s3"].image.size == (20, 12)
    assert client.stats.dropped_members == 1
    assert set(samples["s4"].additional_images) == {"seg.png"}  # the format's keys, not the wheel's


def test_auto_convert_for_files_gives_pil_images_and_no_torch(files: Path) -> None:
    config = {"source_type": "file", "source_config": {"root_path": str(files)}, "limit": 10}
    client = DatagoClient(json.dumps(config))
    items = []
    while (item := client.get_sample_auto_convert()) is not None:
        items.append(item)
    assert len(items) == 6
    for item in items:
        assert set(item) == {
            "id", "source", "duplicate_state", "attributes", "tags", "coca_embedding",
            "latents", "image", "masks", "additional_images",
        }  # fmt: skip
        assert (item["attributes"], item["latents"], item["masks"]) == ({}, {}, {})
        assert (item["tags"], item["coca_embedding"], item["duplicate_state"]) == ([], [], 0)
        with Image.open(json.loads(item["id"])) as reference:
            assert item["image"].mode == reference.mode
            np.testing.assert_array_equal(np.asarray(item["image"]), np.asarray(reference))


def test_auto_convert_of_webdataset_gives_json_text_values_and_pil_images(shards_url: str) -> None:
    config = {"source_type": "webdataset", "source_config": {"url": shards_url}, "limit": 10}
    client = DatagoClient(json.dumps(config))
    first = client.get_sample_auto_convert()
    assert first is not None and first["id"] == "s1"
    assert first["attributes"] == {  # JSON text of each value: strings come back quoted [wheel]
        "json": json.dumps(json.dumps(CAPTION), ensure_ascii=False),
        "cls": '"3\\n"',
        "txt": '"a text"',
    }
    assert isinstance(first["image"], Image.Image) and first["image"].size == (24, 16)
    assert first["additional_images"]["png"].mode == "RGB"
    client.stop()


def test_db_fields_latents_and_auto_convert(db_env: str) -> None:
    config = db_config(has_latents="latent_vae,masked_image", require_embeddings=True)
    client = DatagoClient(json.dumps(config))
    sample = client.get_sample()
    assert sample is not None and sample.id == "COYO/img0.jpg" and sample.source == "COYO"
    attributes = json.loads(sample.attributes)
    assert attributes["caption_coca"] == "a photo 0" and attributes["nested"] == {
        "b": [1, 2],
        "a": None,
    }
    assert sample.attributes_dict == attributes
    assert sample.tags == ["v4_trainset_hq"] and sample.duplicate_state == 1
    assert sample.coca_embedding == [
        float(np.float32(0.1)),
        float(np.float32(1 / 3)),
    ]  # f32 [wheel]
    latent = sample.latents["latent_vae"]
    assert latent.len == len(latent.data)  # `.data` / `.len`, as upstream's LatentPayload
    np.testing.assert_array_equal(np.load(io.BytesIO(latent.data)), np.zeros((2, 3), np.float32))
    assert sample.masks["segmentation_mask"].mode == "L"
    assert sample.masks["segmentation_mask"].get_payload().channels == 1
    assert sample.additional_images["masked_image"].mode == "RGB"
    item: dict[str, Any] | None = client.get_sample_auto_convert()
    assert item is not None and item["id"] == "COYO/img1.jpg"
    assert item["attributes"]["caption_coca"] == '"a photo 1"'
    assert item["attributes"]["score"] == "1.5"
    assert item["attributes"]["nested"] == '{"b":[1,2],"a":null}'
    assert item["latents"]["latent_vae"]["len"] == len(item["latents"]["latent_vae"]["data"])
    assert item["masks"]["segmentation_mask"].mode == "L"
    client.stop()


def test_a_sample_without_image_converts_to_none_not_a_crash(db_env: str) -> None:
    client = DatagoClient(json.dumps(db_config(require_images=False)))
    item = client.get_sample_auto_convert()  # the wheel panics here [wheel]
    assert item is not None and item["image"] is None
    assert item["masks"]["segmentation_mask"].mode == "L"
    client.stop()
