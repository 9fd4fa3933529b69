"""Run Photoroom/datago's own Python test modules, unchanged, against ours and the Rust wheel.

    python -m benchmarks.upstream_tests                 # ours, and the wheel when its venv exists
    python -m benchmarks.upstream_tests --impls ours    # or: --impls wheel

The modules (`python/test_*.py` and the `dataset.py` they import) are read from the upstream
snapshot (`--upstream`, a bare git directory) into a temporary folder, outside this
repository, and run there with pytest. Nothing in them is edited: the webdataset tests read
their shard URL from a module constant, which a `conftest.py` written beside them points at
shards served from 127.0.0.1; the db tests read `DATAROOM_API_URL`, which points at
`python -m datago.dataroom_server` over a folder shaped like the data they expect (source
`COYO`: captions, a `segmentation_mask` mask, a `masked_image` image, tag `v4_trainset_hq`).

The wheel's venv (`--wheel-python`) has no pytest: pass `--wheel-pythonpath` to a folder
that holds one (`pip install --target DIR pytest`). Not part of CI: it needs that venv and
the snapshot. Prints pytest's summary per implementation; the exit status is non-zero when
any run failed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from datago.demo import synthetic_photo

UPSTREAM = Path("/work/.mirror/Photoroom+datago/repo")
WHEEL_PYTHON = Path("/opt/rust-datago/bin/python")
MODULES = [
    "python/dataset.py",
    "python/raw_types.py",
    "python/test_datago_client.py",
    "python/test_datago_edge_cases.py",
    "python/test_datago_filesystem.py",
    "python/test_pil_implicit_conversion.py",
    "python/test_datago_wds.py",
    "python/test_datago_db.py",
]
SHARDS, PER_SHARD = 3, 6

CONFTEST = '''"""Written by datago-py's benchmarks/upstream_tests.py: serves the webdataset shards from
127.0.0.1 and points the (unchanged) webdataset tests at them."""

import functools
import http.server
import os
import threading

import pytest


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True, scope="session")
def _loopback_shards():
    handler = functools.partial(_Quiet, directory=os.environ["UPSTREAM_SHARDS"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        import test_datago_wds
    except ImportError:
        test_datago_wds = None
    if test_datago_wds is not None:
        url = f"http://127.0.0.1:{server.server_port}/{{000..%03d}}.tar" % (int(os.environ["UPSTREAM_SHARD_COUNT"]) - 1)
        for bucket in test_datago_wds.TEST_BUCKETS.values():
            bucket["url"] = url
    yield
    server.shutdown()
'''


def extract(upstream: Path, folder: Path) -> None:
    """Copy upstream's modules, as they are, into `folder`."""
    for module in MODULES:
        text = subprocess.run(
            ["git", "-C", str(upstream), "show", f"HEAD:{module}"],
            check=True,
            capture_output=True,
        ).stdout
        (folder / Path(module).name).write_bytes(text)
    (folder / "conftest.py").write_text(CONFTEST)


def write_shards(folder: Path) -> None:
    """PD12M-like shards: `key.jpg`, `key.json` (a caption), `key.txt`."""
    folder.mkdir(parents=True)
    for shard in range(SHARDS):
        with tarfile.open(folder / f"{shard:03d}.tar", "w") as tar:
            for i in range(PER_SHARD):
                key = f"{shard:03d}{i:03d}"
                rng = np.random.default_rng([shard, i])
                photo = synthetic_photo(320 + 16 * i, 240, rng)
                jpeg = io.BytesIO()
                photo.save(jpeg, "JPEG", quality=90)
                caption = f"a photo number {key}"
                members = {
                    "jpg": jpeg.getvalue(),
                    "json": json.dumps({"caption": caption, "width": photo.width}).encode(),
                    "txt": caption.encode(),
                }
                for extension, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{extension}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def write_dataroom(folder: Path) -> None:
    """A folder for `datago.dataroom_server` shaped like upstream's db test data."""
    source = folder / "COYO"
    source.mkdir(parents=True)
    for i in range(8):
        stem = source / f"image_{i:03d}"
        rng = np.random.default_rng([7, i])
        size = (256 + 32 * i, 192)
        synthetic_photo(*size, rng).save(stem.with_suffix(".jpg"), quality=90)
        mask = (np.arange(size[0])[None, :] + np.arange(size[1])[:, None]) % 255
        Image.fromarray(mask.astype(np.uint8)).save(f"{stem}.segmentation_mask.png")
        synthetic_photo(*size, rng).save(f"{stem}.masked_image.png")
        sidecar = {
            "caption_coca": f"a photo {i}",
            "caption_cogvlm": f"a longer description of photo number {i}",
            "caption_moondream": f"photo {i}",
            "tags": ["v4_trainset_hq", "photo"],
            "duplicate_state": 1 + i % 2,
        }
        stem.with_suffix(".json").write_text(json.dumps(sidecar))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_dataroom(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m datago.dataroom_server` on a free loopback port, once it answers."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "datago.dataroom_server", "--root", str(root), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}/api/"
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the dataroom server did not start")


def run_pytest(python: list[str], folder: Path, env: dict[str, str]) -> tuple[int, str]:
    """pytest over `folder`, from inside it; returns its status and its last lines."""
    result = subprocess.run(
        [*python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", "."],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    lines = result.stdout.strip().splitlines()
    summary = [line for line in lines if line.startswith(("FAILED", "ERROR"))] + lines[-1:]
    return result.returncode, "\n".join(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impls", default="ours,wheel")
    parser.add_argument("--upstream", type=Path, default=UPSTREAM)
    parser.add_argument("--wheel-python", type=Path, default=WHEEL_PYTHON)
    parser.add_argument("--wheel-pythonpath", default="")
    args = parser.parse_args()
    status = 0
    with tempfile.TemporaryDirectory(prefix="datago-upstream-") as tmp:
        root = Path(tmp)
        write_shards(root / "shards")
        write_dataroom(root / "dataroom")
        server, api_url = start_dataroom(root / "dataroom")
        try:
            for impl in args.impls.split(","):
                folder = root / impl
                folder.mkdir()
                extract(args.upstream, folder)
                env = {
                    **os.environ,
                    "UPSTREAM_SHARDS": str(root / "shards"),
                    "UPSTREAM_SHARD_COUNT": str(SHARDS),
                    "DATAROOM_API_URL": api_url,
                    "DATAROOM_API_KEY": "local",
                    "DATAROOM_TEST_SOURCE": "COYO",
                }
                env.pop("PYTHONPATH", None)
                if impl == "wheel":
                    if not args.wheel_python.exists():
                        print(f"wheel: skipped, no {args.wheel_python}")
                        continue
                    python = [str(args.wheel_python), "-P"]
                    if args.wheel_pythonpath:
                        env["PYTHONPATH"] = args.wheel_pythonpath
                else:
                    python = [sys.executable, "-P"]
                code, summary = run_pytest(python, folder, env)
                status |= code
                print(f"== {impl} ({python[0]})\n{summary}")
        finally:
            server.terminate()
            server.wait(10)
    sys.exit(status)


if __name__ == "__main__":
    main()
