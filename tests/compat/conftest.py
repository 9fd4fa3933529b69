"""Data for the wheel-compatibility tests: an image folder, shards over loopback HTTP, and the
project's dataroom server (`python -m datago.dataroom_server`) on a folder shaped like the
data upstream's db tests expect.

Expected values marked "[wheel]" in these tests were observed on the Rust wheel (datago
2026.10.1) with the same inputs; see docs/guide.md, "Coming from the Rust wheel".
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import Server, encode, free_port, photo, write_tar

CAPTION = {"caption": "h\u00e9llo", "k": 1}
WDS_SAMPLES: list[tuple[str, dict[str, bytes]]] = [
    (
        "s1",
        {
            "jpg": encode(photo(24, 16, seed=1), "JPEG", quality=95),
            "png": encode(photo(24, 16, seed=2), "PNG"),
            "json": json.dumps(CAPTION).encode(),
            "cls": b"3\n",
            "txt": b"a text",
        },
    ),
    ("s2", {"jpg": encode(photo(20, 12, seed=3), "JPEG"), "json": b"{bad json"}),
    ("s3", {"jpg": encode(photo(20, 12, seed=4), "JPEG"), "png": b"\x89PNG corrupt"}),
    ("s4", {"jpg": encode(photo(16, 16, seed=5), "JPEG"), "seg.png": encode(photo(16, 16), "PNG")}),
]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """RGB, L, RGBA, LA and 16-bit grey PNGs and a JPEG, with names that need quoting."""
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    photo(8, 6, seed=1).save(root / "a rgb.png")
    photo(8, 6, seed=2, mode="L").save(root / "b grey.png")
    photo(8, 6, seed=3, mode="RGBA").save(root / 'c "q" \\\u00e9.png')
    photo(8, 6, seed=4, mode="LA").save(root / "sub" / "d la.png")
    photo(8, 6, seed=5).save(root / "e.jpg", quality=95)
    deep = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000).astype(np.uint16)
    Image.fromarray(deep).save(root / "f deep.png")
    return root


@pytest.fixture
def shards_url(tmp_path: Path) -> Iterator[str]:
    """`WDS_SAMPLES` in one shard, served from 127.0.0.1; the URL as a brace pattern."""
    shard = write_tar(tmp_path / "shard-0.tar", WDS_SAMPLES)
    with Server.files({"shard-0.tar": shard.read_bytes()}) as server:
        yield server.url + "shard-{0..0}.tar"


def write_dataroom(root: Path) -> None:
    """Source `COYO`: captions, a `segmentation_mask` mask, a `masked_image` image, a latent,
    tags and an embedding, as upstream's db tests expect them."""
    folder = root / "COYO"
    folder.mkdir(parents=True)
    for i in range(4):
        stem = folder / f"img{i}"
        photo(32 + 8 * i, 24, seed=i).save(f"{stem}.jpg", quality=95)
        photo(32 + 8 * i, 24, seed=10 + i, mode="L").save(f"{stem}.segmentation_mask.png")
        photo(32 + 8 * i, 24, seed=20 + i).save(f"{stem}.masked_image.png")
        latent = io.BytesIO()
        np.save(latent, np.full((2, 3), i, dtype=np.float32))
        Path(f"{stem}.latent_vae.npy").write_bytes(latent.getvalue())
        sidecar = {
            "caption_coca": f"a photo {i}",
            "caption_cogvlm": f"a longer caption of photo {i}",
            "score": 0.5 + i,
            "nested": {"b": [1, 2], "a": None},
            "tags": ["v4_trainset_hq"],
            "duplicate_state": 1 + i % 2,
            "coca_embedding": [0.1, 1 / 3],
        }
        Path(f"{stem}.json").write_text(json.dumps(sidecar))


@pytest.fixture(scope="module")
def dataroom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m datago.dataroom_server` on a free loopback port; its API URL."""
    root = tmp_path_factory.mktemp("dataroom")
    write_dataroom(root)
    port = free_port()
    command = [sys.executable, "-m", "datago.dataroom_server", "--root", str(root)]
    server = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/api/"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def db_env(dataroom: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATAROOM_API_URL", dataroom)
    monkeypatch.setenv("DATAROOM_API_KEY", "local")
    return dataroom


def db_config(**source: object) -> dict[str, object]:
    """upstream's db test config (`python/test_datago_db.py`), with `source` changes."""
    return {
        "source_type": "db",
        "source_config": {
            "page_size": 10,
            "sources": "COYO",
            "require_images": True,
            "has_masks": "segmentation_mask",
            "has_latents": "masked_image",
            "has_attributes": "caption_coca,caption_cogvlm",
            "return_latents": "masked_image",
            "rank": 0,
            "world_size": 1,
            **source,
        },
        "prefetch_buffer_size": 64,
        "samples_buffer_size": 10,
        "limit": 4,
    }
