"""Bad files are counted, logged skips; the stream goes on and the limit counts good ones."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datago import DatagoClient, Skip, Stats
from tests.helpers import encode, file_config, file_id, path_of, photo, write_images


def write_bad_files(folder: Path) -> dict[str, str]:
    """Bad files by name, with the skip reason kind each must produce."""
    good_jpeg = encode(photo(64, 48), "JPEG", quality=90)
    good_png = encode(photo(64, 48), "PNG")
    bad = {
        "zero.jpg": b"",
        "text.png": b"just some text, not a picture",
        "truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "truncated.png": good_png[: len(good_png) // 2],
        "header_only.jpg": good_jpeg[:200],
        "corrupt_body.png": good_png[:60] + bytes(200) + good_png[260:],
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    return dict.fromkeys(bad, "DecodeError")


def test_bad_files_are_skipped_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = write_images(tmp_path, 6)
    bad = write_bad_files(tmp_path)
    with (
        caplog.at_level(logging.WARNING, logger="datago"),
        DatagoClient(file_config(tmp_path)) as client,
    ):
        delivered = [s.id for s in client]
        stats = client.stats
    assert delivered == good
    assert stats.skipped == len(bad)
    assert stats.skip_reasons == {"DecodeError": len(bad)}
    # Each skip is a value: its kind, the sample's id and the cause, as the log line says.
    skips = {skip.sample_id: skip for skip in stats.recent_skips}
    assert sorted(skips) == sorted(file_id(tmp_path / name) for name in bad)
    assert {skip.kind for skip in skips.values()} == {"DecodeError"}
    assert all(skip.cause for skip in skips.values())
    logged = {r.getMessage().split(":", 1)[0]: r.getMessage() for r in caplog.records}
    for name in bad:
        message = logged[f"skipped sample {file_id(tmp_path / name)!r}"]
        skip = skips[file_id(tmp_path / name)]
        assert f": {skip.kind}: {skip.cause} (" in message  # the reason, after the id


def test_imperfect_jpegs_are_delivered(tmp_path: Path) -> None:
    good = encode(photo(64, 48), "JPEG", quality=90)
    dqt = good.find(b"\xff\xdb")
    imperfect = {
        "no_end_marker.jpg": good[:-2],
        "padded.jpg": good[:-2] + bytes(64),
        "stray_bytes.jpg": good[:dqt] + b"\x00\x00" + good[dqt:],
    }
    for name, data in imperfect.items():
        (tmp_path / name).write_bytes(data)
    with DatagoClient(file_config(tmp_path)) as client:
        delivered = {Path(path_of(s.id)).name: s.image.to_numpy() for s in client}
        stats = client.stats
    assert sorted(delivered) == sorted(imperfect) and stats.skipped == 0
    with Image.open(io.BytesIO(good)) as clean:
        expected = np.asarray(clean)
    for pixels in delivered.values():
        np.testing.assert_array_equal(pixels, expected)


def test_decompression_bomb_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_images(tmp_path, 2)
    photo(300, 300).save(tmp_path / "bomb.png")
    photo(300, 300).save(tmp_path / "bomb.jpg")
    config = {**file_config(tmp_path), "image_config": {"max_image_pixels": 200 * 200}}
    with (
        caplog.at_level(logging.WARNING, logger="datago"),
        DatagoClient(config) as client,
    ):
        delivered = [s.id for s in client]
        stats = client.stats
    assert len(delivered) == 2 and not any("bomb" in Path(i).name for i in delivered)
    assert stats.skipped == 2 and stats.skip_reasons == {"DecodeError": 2}
    bombs = [r.getMessage() for r in caplog.records if "bomb." in r.getMessage()]
    assert len(bombs) == 2
    assert all("decompression bomb: 300x300 pixels exceeds" in m for m in bombs)


def test_limit_is_reached_past_bad_files(tmp_path: Path) -> None:
    write_bad_files(tmp_path)
    good = write_images(tmp_path, 5)
    with DatagoClient(file_config(tmp_path, limit=4)) as client:
        assert [s.id for s in client] == good[:4]


def test_file_name_that_is_not_utf8_is_a_counted_skip(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = write_images(tmp_path / "sub", 2)
    data = encode(photo(16, 12), "JPEG")
    folder = os.fsencode(tmp_path / "sub")
    with open(os.path.join(folder, b"caf\xe9.jpg"), "wb") as latin1:  # "cafe" in Latin-1
        latin1.write(data)
    (tmp_path / "sub" / "caf\u00e9.jpg").write_bytes(data)  # the same name in UTF-8
    with (
        caplog.at_level(logging.WARNING, logger="datago"),
        DatagoClient(file_config(tmp_path)) as client,
    ):
        delivered = [s.id for s in client]
        stats = client.stats
    assert delivered == sorted([*good, file_id(tmp_path / "sub" / "caf\u00e9.jpg")])
    assert all(i.encode("utf-8") for i in delivered)
    assert stats.skipped == 1
    assert stats.skip_reasons == {"bad file name": 1}
    [skip] = stats.recent_skips
    assert (skip.kind, skip.cause) == ("bad file name", "bytes that are not UTF-8")
    assert skip.sample_id.endswith("caf\udce9.jpg")
    assert "caf\\udce9.jpg" in caplog.text and "bytes that are not UTF-8" in caplog.text


def test_only_the_last_skips_are_kept() -> None:
    stats = Stats()
    for i in range(250):
        stats.skip("DecodeError", f"s{i}", "bad")
    snapshot = stats.snapshot()
    assert snapshot.skipped == 250 and snapshot.skip_reasons == {"DecodeError": 250}
    assert [skip.sample_id for skip in snapshot.recent_skips] == [f"s{i}" for i in range(150, 250)]
    stats.skip("no image", "s250", "no member is an image")
    assert len(snapshot.recent_skips) == 100  # a snapshot does not change
    assert stats.snapshot().recent_skips[-1] == Skip("no image", "s250", "no member is an image")


def test_dangling_symlink_is_not_an_image_file(tmp_path: Path) -> None:
    good = write_images(tmp_path, 3)
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "missing-target.jpg")
    with DatagoClient(file_config(tmp_path)) as client:
        delivered = [s.id for s in client]
        stats = client.stats
    assert delivered == good
    assert stats.skipped == 0


@pytest.mark.parametrize(
    ("mode", "channels", "dtype"),
    [("L", 1, np.uint8), ("LA", 2, np.uint8), ("RGBA", 4, np.uint8), ("I;16", 1, np.uint16)],
)
def test_png_modes_keep_their_channels(
    tmp_path: Path, mode: str, channels: int, dtype: type
) -> None:
    image = photo(20, 10, mode="RGBA" if mode in ("LA", "RGBA") else "RGB").convert(
        "LA" if mode == "LA" else "RGBA" if mode == "RGBA" else "L"
    )
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
    image.save(tmp_path / "x.png")
    with DatagoClient(file_config(tmp_path)) as client:
        (sample,) = list(client)
    pixels = sample.image.to_numpy()
    assert pixels.shape == (10, 20, channels) and pixels.dtype == dtype
    np.testing.assert_array_equal(pixels.reshape(np.asarray(image).shape), np.asarray(image))
    assert sample.image.bit_depth == (16 if mode == "I;16" else 8)


def test_palette_and_cmyk_become_rgb(tmp_path: Path) -> None:
    base = photo(24, 16)
    base.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.png")
    base.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with DatagoClient(file_config(tmp_path)) as client:
        samples = {Path(path_of(s.id)).name: s for s in client}
    palette = samples["palette.png"].image.to_numpy()
    with Image.open(tmp_path / "palette.png") as reference:
        np.testing.assert_array_equal(palette, np.asarray(reference.convert("RGB")))
    cmyk = samples["cmyk.jpg"].image.to_numpy()
    assert cmyk.shape == (16, 24, 3)
    assert np.abs(cmyk.astype(int) - np.asarray(base).astype(int)).mean() < 12
