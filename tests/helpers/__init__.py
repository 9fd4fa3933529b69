"""The test toolbox: builders of real data and ONE loopback server. Test modules import from here
(or its modules), never from one another; `tests/conftest.py` holds only fixtures.

- `images`: `photo` (PIL), `photo_like` / `line_art` (arrays), `encode`, `small_jpeg`,
  `small_png`, `CLEAN_JPEG` / `IMPERFECT_JPEGS`, `png_bytes` / `png_file` / `interlaced_png`
  (hand-written PNGs), `write_images` (a folder of JPEG/PNG), `big_jpegs` (12 MP JPEGs),
  `file_id` / `path_of` (a file source's id is its path as JSON text).
- `reference`: `reference_bucket_resize` (upstream's resize replicated), `assert_close`.
- `shards`: `sample_members`, `write_tar`, `write_shards`, `shard_files` (shards as bytes to
  serve), `write_noisy_shards` (a JPEG and 24 KB of noise per sample: for counting bytes),
  `sample_spans` (each sample's tar bytes), hand-written tar: `raw_header`, `raw_member`, `pax_member`, `raw_tar`.
- `configs`: `file_config` (a `file` source), `wds_source` (a `WebDatasetSourceConfig`).
- `reading`: `ids_of(client, count)`, `iter_webdataset` / `collect_wds(source)` (the
  webdataset node's raw samples, with `FAST` retries), `datago_threads()`.
- `scripted`: `ScriptedSource`, a source node that yields what a test scripts.
- `dataroom`: `write_catalogue`, `write_catalogue_with_latents` (folders the dataroom folder
  server serves).
- `servers`: `Server` (aiohttp on 127.0.0.1; `async with` on the test's loop, `with` in a
  thread; `Server.files(files, ranges=)`, `Server.handler(handle)`, `Server(app)`), its request
  log `Server.requests` of `Logged` (url, path, query, headers, range, range_start, attempt,
  status, bytes sent, fault, start/end) and its sums (`per_name`, `sent`, `in_flight`,
  `most_at_once`), `files_app`, `byte_range`, `free_port`. Its own tests:
  tests/test_helpers_server.py.
- `faults`: `Fault` (error, reset, hang, cut, stall, delay, trickle, slow_tail, change) and
  the rules that pick requests for it: `always`, `first`, `script`, or any function of `Logged`.
- `object_stores` (imported as a module: it loads moto): moto's S3 server, `S3Proxy` (logs
  and breaks S3 requests), Azurite, `AWS_VARIABLES`.
"""

from tests.helpers.configs import file_config, wds_source
from tests.helpers.dataroom import write_catalogue, write_catalogue_with_latents
from tests.helpers.faults import Fault, Rule, always, first, script, until_hung_up
from tests.helpers.images import (
    CLEAN_JPEG,
    IMPERFECT_JPEGS,
    big_jpegs,
    encode,
    file_id,
    interlaced_png,
    line_art,
    path_of,
    photo,
    photo_like,
    png_bytes,
    png_file,
    small_jpeg,
    small_png,
    write_images,
)
from tests.helpers.reading import FAST, collect_wds, datago_threads, ids_of, iter_webdataset
from tests.helpers.reference import assert_close, reference_bucket_resize
from tests.helpers.scripted import ScriptedSource
from tests.helpers.servers import Logged, Server, byte_range, files_app, free_port
from tests.helpers.shards import (
    pax_member,
    raw_header,
    raw_member,
    raw_tar,
    sample_members,
    sample_spans,
    shard_files,
    write_noisy_shards,
    write_shards,
    write_tar,
)

__all__ = [
    "CLEAN_JPEG",
    "FAST",
    "IMPERFECT_JPEGS",
    "Fault",
    "Logged",
    "Rule",
    "ScriptedSource",
    "Server",
    "always",
    "assert_close",
    "big_jpegs",
    "byte_range",
    "collect_wds",
    "datago_threads",
    "encode",
    "file_config",
    "file_id",
    "files_app",
    "first",
    "free_port",
    "ids_of",
    "interlaced_png",
    "iter_webdataset",
    "line_art",
    "path_of",
    "pax_member",
    "photo",
    "photo_like",
    "png_bytes",
    "png_file",
    "raw_header",
    "raw_member",
    "raw_tar",
    "reference_bucket_resize",
    "sample_members",
    "sample_spans",
    "script",
    "shard_files",
    "small_jpeg",
    "small_png",
    "until_hung_up",
    "wds_source",
    "write_catalogue",
    "write_catalogue_with_latents",
    "write_images",
    "write_noisy_shards",
    "write_shards",
    "write_tar",
]
