"""What a wheel script sees, ours against the Rust wheel: the same probe in both venvs, diffed.

    python -m benchmarks.compare_wheel

The probe reads files (PNG and JPEG of every mode, names that need quoting), webdataset
shards over loopback HTTP and `python -m datago.dataroom_server`, through the wheel's
surface only (`get_sample`, `get_payload`, `np.asarray(sample.image)`, `sample.image.mode`,
`json.loads(sample.attributes)`, latents, `get_sample_auto_convert`), plus configs the wheel
cannot use. It prints each field that differs, per sample; the expected differences are
listed in docs/guide.md, "Coming from the Rust wheel". Not part of CI.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

WHEEL_PYTHON = Path("/opt/rust-datago/bin/python")
ROOT = Path(__file__).resolve().parent.parent


def summary(sample: Any) -> dict[str, Any]:
    """What a wheel script can read of one sample, as JSON."""
    payload = sample.image.get_payload()
    seen: dict[str, Any] = {
        "source": sample.source,
        "attributes": json.loads(sample.attributes),
        "payload": [
            payload.width,
            payload.height,
            payload.original_width,
            payload.original_height,
            payload.channels,
            payload.is_encoded,
        ],
        "masks": sorted(sample.masks),
        "additional_images": sorted(sample.additional_images),
        "latents": {name: latent.len for name, latent in sample.latents.items()},
        "tags": sample.tags,
        "duplicate_state": sample.duplicate_state,
        "coca_embedding": sample.coca_embedding,
    }
    if payload.channels:
        try:
            pixels = np.asarray(sample.image)
            seen["mode"] = sample.image.mode
            seen["asarray"] = [list(pixels.shape), str(pixels.dtype), round(float(pixels.mean()))]
        except BaseException as exc:  # the wheel cannot convert 16-bit payloads
            seen["asarray"] = f"raised {type(exc).__name__}"
    return seen


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Every sample of every config, then the auto-converted first one; in this venv."""
    import datago

    result: dict[str, Any] = {"loader": datago.__file__}
    for name, config in spec["configs"].items():
        client = datago.DatagoClient(json.dumps(config))
        samples = {}
        while (sample := client.get_sample()) is not None:
            samples[sample.id] = summary(sample)
        client = datago.DatagoClient(json.dumps(config))
        converted: Any
        try:
            item = client.get_sample_auto_convert()
            converted = (
                None
                if item is None
                else {
                    key: type(value).__name__ if key in ("image", "masks") else value
                    for key, value in item.items()
                    if key not in ("latents", "additional_images", "id")
                }
            )
        except BaseException as exc:  # the wheel's PanicException is a BaseException
            converted = f"raised {type(exc).__name__}"
        client.stop()
        result[name] = {"samples": samples, "auto_convert": converted}
    for name, text in spec["unusable"].items():
        result[name] = {"get_sample": repr(datago.DatagoClient(text).get_sample())}
    return result


def configs(images: Path, shards_url: str) -> dict[str, Any]:
    file_source = {"source_type": "file", "source_config": {"root_path": str(images)}}
    db = {
        "source_type": "db",
        "source_config": {"sources": "COYO", "page_size": 10, "require_images": True,
                          "has_masks": "segmentation_mask", "require_embeddings": True},
    }  # fmt: skip
    return {
        "configs": {
            "file": {**file_source, "limit": 100, "samples_buffer_size": 8},
            "file-rgb8-png": {
                **file_source,
                "limit": 100,
                "samples_buffer_size": 8,
                "image_config": {
                    "crop_and_resize": False,
                    "image_to_rgb8": True,
                    "pre_encode_images": True,
                },
            },
            "webdataset": {
                "source_type": "webdataset",
                "source_config": {"url": shards_url},
                "limit": 100,
                "samples_buffer_size": 8,
            },
            "db": {**db, "limit": 4, "samples_buffer_size": 8},
        },
        "unusable": {
            "bad-json": "{not json",
            "rank-2-of-2": json.dumps(
                {
                    **file_source,
                    "source_config": {"root_path": str(images), "rank": 2, "world_size": 2},
                    "limit": 3,
                }
            ),
            "missing-folder": json.dumps(
                {**file_source, "source_config": {"root_path": str(images / "nope")}, "limit": 3}
            ),
            "limit-0": json.dumps({**file_source, "limit": 0}),
        },
    }


def write_images(folder: Path) -> None:
    from PIL import Image

    from datago.demo import synthetic_photo

    folder.mkdir(parents=True)
    photo = synthetic_photo(64, 48, np.random.default_rng(0))
    photo.save(folder / "rgb.png")
    photo.save(folder / "photo.jpg", quality=95)
    photo.convert("L").save(folder / "grey.png")
    photo.convert("RGBA").save(folder / 'quote "q" \\ \u00e9.png')
    photo.convert("LA").save(folder / "la.png")
    photo.convert("P").save(folder / "palette.gif")
    Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257).save(folder / "deep.png")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def run(python: list[str], spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    script = (
        "import json, sys\n"
        f"sys.path.append({str(ROOT)!r})\n"
        "from benchmarks.compare_wheel import probe\n"
        "print(json.dumps(probe(json.loads(sys.argv[1]))))\n"
    )
    done = subprocess.run(
        [*python, "-c", script, json.dumps(spec)],
        cwd=tempfile.gettempdir(),
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"{python[0]} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def diff(ours: Any, wheel: Any, where: str) -> list[str]:
    if isinstance(ours, dict) and isinstance(wheel, dict):
        lines = []
        for key in sorted(set(ours) | set(wheel)):
            if key not in wheel:
                lines.append(f"{where}.{key}: only ours")
            elif key not in ours:
                lines.append(f"{where}.{key}: only the wheel's")
            else:
                lines += diff(ours[key], wheel[key], f"{where}.{key}")
        return lines
    return [] if ours == wheel else [f"{where}: ours {ours!r} / wheel {wheel!r}"]


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    from benchmarks.upstream_tests import start_dataroom, write_dataroom, write_shards

    with tempfile.TemporaryDirectory(prefix="datago-compare-") as tmp:
        root = Path(tmp)
        write_images(root / "images")
        write_shards(root / "shards")
        write_dataroom(root / "dataroom")
        handler = functools.partial(_QuietHandler, directory=root / "shards")
        shards = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=shards.serve_forever, daemon=True).start()
        server, api_url = start_dataroom(root / "dataroom")
        try:
            url = f"http://127.0.0.1:{shards.server_port}/{{000..002}}.tar"
            spec = configs(root / "images", url)
            env = {**os.environ, "DATAROOM_API_URL": api_url, "DATAROOM_API_KEY": "local"}
            env.pop("PYTHONPATH", None)
            ours = run([sys.executable, "-P"], spec, env)
            wheel = run([str(WHEEL_PYTHON), "-P"], spec, env)
        finally:
            server.terminate()
            server.wait(10)
            shards.shutdown()
    assert "rust-datago" in wheel.pop("loader") and "rust-datago" not in ours.pop("loader")
    lines = diff(ours, wheel, "")
    print("\n".join(lines) if lines else "no difference")
    print(f"{len(lines)} difference(s) over {len(ours)} configs")


if __name__ == "__main__":
    main()
