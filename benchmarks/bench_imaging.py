"""Decode + bucket crop/resize throughput: ours vs a naive Pillow path vs Rust datago vs raw decode.

    python -m benchmarks.bench_imaging [--seconds 2.5] [--sets hires,lowres,png]

Generates deterministic photo-like images once into benchmarks/data/imaging/ (~1.2 MP JPEG q90,
500x375 JPEG q95, ~1 MP PNG), then measures images/s from in-memory bytes with 1 and 2 threads
(each thread loops over the images until the time is up). Rust datago (if
/opt/rust-datago/bin/python exists) runs its file source over the same files with
DATAGO_MAX_TASKS=2, timed from client construction to the last sample.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

from datago.config import ImageConfig
from datago.imaging.buckets import BucketTable
from datago.imaging.decode import fast_png_decode
from datago.imaging.process import ImageProcessor
from datago.imaging.resample import FastResampler, PillowResampler, Resampler
from datago.stats import StageTimes

DATA = Path(__file__).parent / "data" / "imaging"
RUST_PYTHON = Path("/opt/rust-datago/bin/python")
RUST_COPIES = 6  # each image is linked this many times, so a Rust run lasts long enough
BUCKETS = {
    "crop_and_resize": True,
    "default_image_size": 512,
    "downsampling_ratio": 32,
    "min_aspect_ratio": 0.5,
    "max_aspect_ratio": 2.0,
}
NAIVE = {
    "hires": "naive: DCT decode + 2x PIL Lanczos",
    "lowres": "naive: DCT decode + 2x PIL Lanczos",
    "png": "naive: Pillow decode + 2x PIL Lanczos",
}
SETS = {  # name: (sizes, format, save options)
    "hires": (
        [(1280, 960), (960, 1280), (1344, 896), (896, 1344), (1200, 1000), (1536, 768)] * 4,
        "JPEG",
        {"quality": 90},
    ),
    "lowres": (
        [(500, 375), (375, 500), (500, 333), (480, 360), (500, 400), (512, 384)] * 4,
        "JPEG",
        {"quality": 95},
    ),
    "png": ([(1200, 900), (1000, 1000), (900, 1200), (1152, 864)], "PNG", {}),
}


def photo_like(width: int, height: int, seed: int, alpha: bool = False) -> Image.Image:
    """Smooth colour fields + texture + grain: compresses like a photo (~300 KB/MP at q90)."""
    rng = np.random.default_rng(seed)

    def field(cells_x: int, cells_y: int, amplitude: float, channels: int = 3) -> np.ndarray:
        small = rng.uniform(-amplitude, amplitude, (cells_y, cells_x, channels)).astype(np.float32)
        planes = [
            np.asarray(
                Image.fromarray(small[:, :, c], "F").resize(
                    (width, height), Image.Resampling.BICUBIC
                )
            )
            for c in range(channels)
        ]
        return np.stack(planes, axis=2)

    pixels = 128 + field(4, 3, 90) + field(24, 18, 30) + field(width // 8, height // 8, 14, 1)
    pixels += field(width // 3, height // 3, 12, 1) + field(width // 2, height // 2, 10)
    pixels += rng.normal(0, 3.0, (height, width, 1)).astype(np.float32)
    rgb = np.clip(pixels, 0, 255).astype(np.uint8)
    if not alpha:
        return Image.fromarray(rgb)
    cut = np.clip(field(3, 3, 600, 1)[:, :, 0] + 128, 0, 255).astype(np.uint8)  # soft cut-out
    return Image.fromarray(np.dstack([rgb, cut]))


def dataset(name: str) -> list[Path]:
    """The set's files, generated once (deterministic: seed = index)."""
    sizes, fmt, options = SETS[name]
    folder = DATA / name
    paths = [folder / f"{i:03d}.{fmt.lower()}" for i in range(len(sizes))]
    if all(path.exists() for path in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    for index, (path, size) in enumerate(zip(paths, sizes, strict=True)):
        image = photo_like(*size, seed=index, alpha=fmt == "PNG" and index % 2 == 1)
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        path.write_bytes(buffer.getvalue())
    return paths


def images_per_second(
    work: Callable[[bytes], object], blobs: list[bytes], threads: int, seconds: float
) -> tuple[float, float]:
    """Each thread loops over `blobs` until `seconds` are up.

    Returns images/s and the process CPU ms per image (cores busy = rate * ms / 1000).
    """
    work(blobs[0])  # warm-up
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def loop(slot: int) -> None:
        index = slot
        while time.perf_counter() < deadline:
            work(blobs[index % len(blobs)])
            index += threads
            counts[slot] += 1

    start, cpu_start = time.perf_counter(), time.process_time()
    workers = [threading.Thread(target=loop, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done = sum(counts)
    return done / (time.perf_counter() - start), (time.process_time() - cpu_start) * 1e3 / done


def naive(blob: bytes, table: BucketTable, reduced: bool) -> np.ndarray:
    """simplejpeg (full or DCT-reduced) + Pillow's two Lanczos passes, as bench.md's baselines."""
    height, width, _, _ = simplejpeg.decode_jpeg_header(blob)
    target_w, target_h = table.choose(width, height)
    scale = max(target_w / width, target_h / height)
    cover = (round(width * scale), round(height * scale))
    minimum = cover if reduced else (0, 0)
    pixels = simplejpeg.decode_jpeg(blob, min_width=minimum[0], min_height=minimum[1])
    left, top = (cover[0] - target_w) / 2, (cover[1] - target_h) / 2
    resized = Image.fromarray(pixels).resize(cover, Image.Resampling.LANCZOS)
    box = (left, top, left + target_w, top + target_h)
    return np.asarray(resized.resize((target_w, target_h), Image.Resampling.LANCZOS, box=box))


def naive_pillow(blob: bytes, table: BucketTable) -> np.ndarray:
    """Pillow decode + Pillow's two Lanczos passes."""
    with Image.open(io.BytesIO(blob)) as image:
        target_w, target_h = table.choose(*image.size)
        scale = max(target_w / image.width, target_h / image.height)
        cover = (round(image.width * scale), round(image.height * scale))
        resized = image.resize(cover, Image.Resampling.LANCZOS)
    left, top = (cover[0] - target_w) / 2, (cover[1] - target_h) / 2
    box = (left, top, left + target_w, top + target_h)
    return np.asarray(resized.resize((target_w, target_h), Image.Resampling.LANCZOS, box=box))


def pillow_decode(blob: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(blob)) as image:
        return np.asarray(image)


def resamplers() -> list[Resampler]:
    found: list[Resampler] = [PillowResampler()]
    try:
        found.append(FastResampler())
    except ImportError:
        print("(cykooz-resizer not installed: fast_image_resize rows skipped)")
    return found


def methods(name: str) -> dict[str, Callable[[bytes], object]]:
    table = BucketTable.build(512, 32, 0.5, 2.0)
    resize = ImageConfig(**BUCKETS)  # type: ignore[arg-type]
    found: dict[str, Callable[[bytes], object]] = {}
    if name == "png":
        found["raw: Pillow decode"] = pillow_decode
        if fast_png_decode is not None:
            found["raw: libpng decode (imagecodecs)"] = fast_png_decode
        found[NAIVE[name]] = lambda b: naive_pillow(b, table)
    else:
        found["raw: simplejpeg decode"] = simplejpeg.decode_jpeg
        found["naive: full decode + 2x PIL Lanczos"] = lambda b: naive(b, table, reduced=False)
        found["naive: DCT decode + 2x PIL Lanczos"] = lambda b: naive(b, table, reduced=True)
    found["ours: decode"] = processing(ImageProcessor(None))
    for resampler in resamplers():
        ours = ImageProcessor(resize, resampler=resampler)
        found[f"ours: bucket 512 ({resampler.name})"] = processing(ours)
    return found


def processing(processor: ImageProcessor) -> Callable[[bytes], object]:
    return lambda blob: processor.process(blob, StageTimes())


RUST_SCRIPT = """
import json, sys, time
from datago import DatagoClient
config = json.loads(sys.argv[1])
start = time.perf_counter()
client = DatagoClient(json.dumps(config))
count = 0
while client.get_sample() is not None:
    count += 1
print(json.dumps({"count": count, "seconds": time.perf_counter() - start}))
"""


def rust_datago(paths: list[Path], resize: bool) -> tuple[float, float] | None:
    """Rust datago's file source over links to the set's files, 2 tasks: best img/s and its
    CPU ms/img (its consumer thread polls, which counts); None if not installed."""
    if not RUST_PYTHON.exists():
        return None
    folder = paths[0].parent.parent / f"rust-{paths[0].parent.name}"
    if not folder.exists():
        folder.mkdir()
        for copy in range(RUST_COPIES):
            for path in paths:
                os.link(path, folder / f"{copy}-{path.name}")
    count = len(paths) * RUST_COPIES
    config: dict[str, object] = {
        "source_type": "file",
        "source_config": {"root_path": str(folder)},
        "limit": count,
        "samples_buffer_size": 64,
    }
    if resize:
        config["image_config"] = BUCKETS
    env = {**os.environ, "DATAGO_MAX_TASKS": "2"}
    best = (0.0, 0.0)
    for _ in range(2):
        cpu_before = _children_cpu_s()
        done = subprocess.run(
            [str(RUST_PYTHON), "-c", RUST_SCRIPT, json.dumps(config)],
            capture_output=True, text=True, env=env, cwd="/", check=True, timeout=300,
        )  # fmt: skip
        result = json.loads(done.stdout.strip().splitlines()[-1])
        cpu_ms = (_children_cpu_s() - cpu_before) * 1e3 / result["count"]
        best = max(best, (result["count"] / result["seconds"], cpu_ms))
    return best


RUST_DUMP = """
import json, sys
from pathlib import Path
from datago import DatagoClient
config, out = json.loads(sys.argv[1]), Path(sys.argv[2])
client = DatagoClient(json.dumps(config))
shapes = {}
while (sample := client.get_sample()) is not None:
    payload = sample.image.get_payload()
    name = Path(sample.id.strip('"')).name
    (out / name).write_bytes(payload.data)
    shapes[name] = [payload.height, payload.width, payload.channels]
print(json.dumps(shapes))
"""


def fidelity(paths: list[Path]) -> None:
    """Pixel error of each resize path against Rust datago's own output (and Pillow's replica)."""
    if not RUST_PYTHON.exists():
        return
    table = BucketTable.build(512, 32, 0.5, 2.0)
    config = {
        "source_type": "file",
        "source_config": {"root_path": str(paths[0].parent)},
        "image_config": BUCKETS,
        "limit": 8,
        "samples_buffer_size": 64,
    }
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [str(RUST_PYTHON), "-c", RUST_DUMP, json.dumps(config), out],
            capture_output=True, text=True, cwd="/", check=True, timeout=300,
        )  # fmt: skip
        shapes = json.loads(done.stdout.strip().splitlines()[-1])
        rust = {
            name: np.frombuffer((Path(out) / name).read_bytes(), np.uint8).reshape(shape)
            for name, shape in shapes.items()
        }
    paths_ = {path.name: path for path in paths}
    ours = {
        f"ours ({r.name})": ImageProcessor(ImageConfig(**BUCKETS), resampler=r)  # type: ignore[arg-type]
        for r in resamplers()
    }
    errors: dict[str, list[np.ndarray]] = {label: [] for label in [*ours, "Pillow replica"]}
    for name, expected in rust.items():
        blob = paths_[name].read_bytes()
        for label, processor in ours.items():
            errors[label].append(
                abs_error(processor.process(blob, StageTimes())[0].to_numpy(), expected)
            )
        errors["Pillow replica"].append(abs_error(naive_pillow(blob, table), expected))
    print("| vs Rust datago's pixels | mean abs error | p99.9 | max |")
    print("|---|---|---|---|")
    for label, found in errors.items():
        flat = np.concatenate([error.ravel() for error in found])
        print(f"| {label} | {flat.mean():.2f} | {np.percentile(flat, 99.9):.0f} | {flat.max()} |")
    print()


def abs_error(out: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per-value error; RGBA compares premultiplied colour (colour under alpha 0 is arbitrary)."""
    if out.shape[2] == 4:
        out, expected = premultiplied(out), premultiplied(expected)
    return np.abs(out.astype(np.int16) - expected.astype(np.int16))


def premultiplied(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[:, :, 3:].astype(np.float32) / 255
    return np.dstack([np.rint(rgba[:, :, :3] * alpha), rgba[:, :, 3:]]).astype(np.uint8)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def available_cores(seconds: float = 1.0) -> float:
    """How many cores two busy processes get right now (other tenants of the box take some)."""
    spin = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"
    cpu_before, start = _children_cpu_s(), time.perf_counter()
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    for spinner in spinners:
        spinner.wait()
    return (_children_cpu_s() - cpu_before) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=1.2, help="per method, thread count, round"
    )
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; best one kept")
    parser.add_argument("--sets", default="hires,lowres,png")
    args = parser.parse_args()
    Image.core.set_blocks_max(64)  # type: ignore[attr-defined]  # as a loader process would
    print(
        f"{os.cpu_count()} CPUs, of which two busy processes get {available_cores():.2f} now; "
        "images/s from memory; 2/1 = 2-thread / 1-thread speed-up; 2-core bound = 2000 / CPU ms "
        "(what two free cores give if the work scales)\n"
    )
    for name in args.sets.split(","):
        paths = dataset(name)
        blobs = [path.read_bytes() for path in paths]
        megapixels = (
            np.mean([Image.open(path).size[0] * Image.open(path).size[1] for path in paths]) / 1e6
        )
        kilobytes = np.mean([len(blob) for blob in blobs]) / 1e3
        print(f"### {name}: {len(blobs)} images, {megapixels:.2f} MP, {kilobytes:.0f} KB avg\n")
        print(
            "| method | 1 thr img/s | CPU ms/img | 2-core bound | 2 thr img/s | cores busy | 2/1 "
            "| vs naive |"
        )
        print("|---|---|---|---|---|---|---|---|")
        rows: dict[str, tuple[float, ...]] = {}
        for _ in range(args.rounds):  # interleaved rounds, best of: the box is shared and noisy
            for label, work in methods(name).items():
                measured = (
                    *images_per_second(work, blobs, 1, args.seconds),
                    *images_per_second(work, blobs, 2, args.seconds),
                )
                best = rows.get(label, measured)
                rows[label] = (
                    max(best[0], measured[0]),
                    min(best[1], measured[1]),
                    max(best[2], measured[2]),
                    measured[3] if measured[2] >= best[2] else best[3],
                )
        baseline = rows[NAIVE[name]][2]
        for label, (one, cpu_ms, two, cpu_ms_two) in rows.items():
            busy = two * cpu_ms_two / 1e3
            print(
                f"| {label} | {one:.0f} | {cpu_ms:.1f} | {2000 / cpu_ms:.0f} | {two:.0f} | {busy:.2f} | "
                f"{two / one:.2f} | {two / baseline:.2f} |"
            )
        fidelity(paths)
        for resize in (False, True):
            rust = rust_datago(paths, resize)
            if rust is not None:
                rate, cpu_ms = rust
                label = "bucket 512" if resize else "decode"
                print(
                    f"| Rust datago files, {label} (2 tasks, incl. file reads) | | {cpu_ms:.1f} | "
                    f"{2000 / cpu_ms:.0f} | {rate:.0f} | {rate * cpu_ms / 1e3:.2f} | | "
                    f"{rate / baseline:.2f} |"
                )
        print()


if __name__ == "__main__":
    main()
