"""A dataroom-compatible API over a local folder of images, for tests and demos.

Run `python -m datago.dataroom_server --root FOLDER [--host 127.0.0.1] [--port 8000]
[--token T]`, then set `DATAROOM_API_URL=http://127.0.0.1:8000/api/` and `DATAROOM_API_KEY=T`.
From Python: `make_app(root, token=..., middlewares=[...])` is an `aiohttp.web.Application`.

- `catalogue`: the folder's images and sidecar files (naming rules there);
- `filters`: dataroom's query filters and partitions;
- `app`: `GET /api/images/` (sorted by id; `next`, absolute, carries `cursor=<last id>` while
  a page has results, so the last page is empty with `next: null`, as dataroom),
  `GET /api/images/random/` (a random page, `next` null, partitions ignored, as dataroom),
  `GET /media/<path>`; parameters `fields`, `return_latents`, `page_size` (1..2000, else
  400) and `cursor`.
"""

from __future__ import annotations

from datago.dataroom_server.app import DataroomApi, make_app
from datago.dataroom_server.catalogue import Item, scan_folder

__all__ = ["DataroomApi", "Item", "make_app", "scan_folder"]
