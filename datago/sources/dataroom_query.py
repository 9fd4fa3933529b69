"""The dataroom `images/` query for a `db` source config, and how its parts split the data.

Pure functions, no I/O (`first_page_url` logs upstream's warning about `tags_empty`). The
parameters, their order and the `fields` string follow upstream datago, without two of its
defects: `fields` names `tags` once (upstream appends it again per tag filter) and
`return_latents` never ends with a comma (upstream sends `"a,"` when only `has_latents` is
set).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from urllib.parse import urlencode

from datago.config import DbSourceConfig
from datago.sources.base import Partition, Split

logger = logging.getLogger(__name__)

MAX_SERVER_PARTITIONS = 48
"""Dataroom splits its index into 48 shards; `partitions_count` must be in 2..48."""
_TAG_FILTERS = ("tags", "tags_all", "tags_ne", "tags_ne_all")


def page_fields(config: DbSourceConfig) -> str:
    """The `fields` parameter: the item keys the source reads."""
    fields = ["id", "source", "attributes", "height", "width", "tags"]
    if config.require_images:
        fields.append("image_direct_url")
    if config.has_latents or config.has_masks:
        fields.append("latents")
    if config.require_embeddings:
        fields.append("coca_embedding")
    if config.duplicate_state >= 0:
        fields.append("duplicate_state")
    return ",".join(fields)


def query_params(config: DbSourceConfig, server_part: Partition) -> list[tuple[str, str]]:
    """The query parameters in upstream's order; empty strings and zeros are left out."""
    return_latents = ",".join(name for name in (config.has_latents, config.has_masks) if name)
    candidates = [
        ("fields", page_fields(config)),
        ("sources", config.sources),
        ("sources__ne", config.sources_ne),
        ("page_size", str(config.page_size)),
        ("tags", config.tags),
        ("tags__all", config.tags_all),
        ("tags__ne", config.tags_ne),
        ("tags__ne_all", config.tags_ne_all),
        ("tags__empty", config.tags_empty),
        ("has_attributes", config.has_attributes),
        ("lacks_attributes", config.lacks_attributes),
        ("has_masks", config.has_masks),
        ("lacks_masks", config.lacks_masks),
        ("has_latents", config.has_latents),
        ("lacks_latents", config.lacks_latents),
        ("return_latents", return_latents),
        ("short_edge__gte", _positive(config.min_short_edge)),
        ("short_edge__lte", _positive(config.max_short_edge)),
        ("pixel_count__gte", _positive(config.min_pixel_count)),
        ("pixel_count__lte", _positive(config.max_pixel_count)),
        ("duplicate_state", _positive(config.duplicate_state)),
        ("attributes", config.attributes),
    ]
    if server_part.count > 1:
        candidates += [
            ("partitions_count", str(server_part.count)),
            ("partition", str(server_part.index)),
        ]
    return [(key, value) for key, value in candidates if value]


def first_page_url(api_url: str, config: DbSourceConfig, server_part: Partition) -> str:
    """`<api_url>images/?...`, or `images/random/` with `random_sampling`; built once a pass."""
    combined = [f"{key}={getattr(config, key)!r}" for key in _TAG_FILTERS if getattr(config, key)]
    if config.tags_empty and combined:
        logger.warning(
            "source_config.tags_empty=%r is combined with %s: the API applies every tag "
            "filter together, so the selection may be empty",
            config.tags_empty,
            ", ".join(combined),
        )
    endpoint = "images/random/" if config.random_sampling else "images/"
    query = urlencode(query_params(config, server_part), safe=",:")
    return f"{api_url}{endpoint}?{query}"


def _positive(value: int) -> str:
    return str(value) if value > 0 else ""


@dataclass(frozen=True, slots=True)
class SplitPlan:
    """Who splits the data: the server (`partition` params) and then this client, by id hash.

    Part `i` of `n` (rank x torch worker, flattened) goes to the server whole when
    2 <= n <= 48. Otherwise the server takes the rank split when it can and this client
    keeps, of what the server sends, the ids whose hash falls in its own part.
    """

    server: Partition
    client: Partition

    def keeps(self, sample_id: str) -> bool:
        """Whether this part takes the item `sample_id` of the server's answer."""
        if self.client.count == 1:
            return True
        return _stable_hash(sample_id) % self.client.count == self.client.index


def plan_split(split: Split) -> SplitPlan:
    """Who takes `split` (a rank, then torch workers inside it): the server when it can."""
    whole = split.part
    if whole.count <= MAX_SERVER_PARTITIONS:
        return SplitPlan(server=whole, client=Partition())
    if split.ranks <= MAX_SERVER_PARTITIONS:
        return SplitPlan(server=Partition(split.rank, split.ranks), client=split.workers)
    return SplitPlan(server=Partition(), client=whole)


def _stable_hash(sample_id: str) -> int:
    # Independent of the server's own shard hash, so the client split stays balanced.
    return int.from_bytes(hashlib.blake2b(sample_id.encode(), digest_size=8).digest(), "little")
