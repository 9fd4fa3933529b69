"""A dataroom-compatible API over a local folder of images, for tests and demos.

Run `python -m datago.dataroom_server --root FOLDER [--host 127.0.0.1] [--port 8000]
[--token T]`, then set `DATAROOM_API_URL=http://127.0.0.1:8000/api/` and `DATAROOM_API_KEY=T`.
From Python: `make_app(root, token=..., middlewares=[...])` is an `aiohttp.web.Application`.

- `catalogue`: the folder's images and sidecar files (naming rules there);
- `filters`: dataroom's query filters and partitions;
- `app`: `GET /api/images/` (sorted by id; `next`, absolute, carries `cursor=<last id>` while
  a page has results, so the last page is empty with `next: null`, as dataroom),
  `GET /api/images/random/` (a random page, `next` null, partitions ignored, as dataroom),
  `GET /media/<path>` (404 for a file not in the catalogue or deleted since).

Query parameters supported, as dataroom reads them (comma lists where dataroom has them):
- both endpoints: `fields`, `return_latents`, `page_size` (1..2000); `cursor` and
  `partitions_count` + `partition` (2..48, both or neither) on `images/` only;
- filters: `sources`, `sources__ne`; `short_edge`, `pixel_count`, `aspect_ratio`, bare
  (equal) or with `__gt|__gte|__lt|__lte`; `tags`, `tags__all`, `tags__ne`,
  `tags__ne_all`, `tags__empty` (true/1/yes or false/0/no); `has_attributes`,
  `lacks_attributes`, `has_latents`, `lacks_latents`, `has_masks`, `lacks_masks`;
  `duplicate_state` (1, 2 or None); `attributes` (`name[__cmp]:value,...`, cmp in eq, ne,
  lt, lte, gt, gte; the value is read as the attribute's type; an item without the
  attribute never matches, not even `ne`, which in dataroom it does).
A 400 with a `detail` naming it: a bad value, and dataroom's parameters not done here
(`source`, `source__empty`, `aspect_ratio_fraction[__empty]`, `coca_embedding__empty`,
`date_created__*`, `date_updated__*`, `datasets[__ne|__all|__ne_all|__empty]`,
`all_fields`, `include_fields`, `exclude_fields`, and on `images/random/` `prefix_length`
and `num_prefixes`), and the attribute comparators match, match_phrase, prefix, not_match,
not_match_phrase and not_prefix. Any other name is ignored, as dataroom ignores names it
does not know. Unlike dataroom, unknown tags, latent types and attributes are not a 400.
"""

from __future__ import annotations

from datago.dataroom_server.app import DataroomApi, make_app
from datago.dataroom_server.catalogue import Item, scan_folder

__all__ = ["DataroomApi", "Item", "make_app", "scan_folder"]
