"""Shard lists: brace expansion and the split of shards (or samples) between parts."""

from __future__ import annotations

import pytest

from datago.errors import ConfigError
from datago.sources.base import Partition
from datago.sources.shards import ShardPlan, expand_braces, expand_urls, plan_part


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("s-{000000..000003}.tar", [f"s-{i:06d}.tar" for i in range(4)]),
        ("s-{8..11}.tar", ["s-8.tar", "s-9.tar", "s-10.tar", "s-11.tar"]),
        ("s-{08..11}.tar", ["s-08.tar", "s-09.tar", "s-10.tar", "s-11.tar"]),
        ("{3..1}", ["3", "2", "1"]),
        ("{0..10..5}", ["0", "5", "10"]),
        ("{a,b}/{1..2}", ["a/1", "a/2", "b/1", "b/2"]),
        ("x{a,b{1..2}}y", ["xay", "xb1y", "xb2y"]),
        ("{a,}z", ["az", "z"]),
        (
            "https://h/p/{train,val}-{00..01}.tar",
            [
                "https://h/p/train-00.tar",
                "https://h/p/train-01.tar",
                "https://h/p/val-00.tar",
                "https://h/p/val-01.tar",
            ],
        ),
        ("plain.tar", ["plain.tar"]),
        ("{}{x}{unclosed", ["{}{x}{unclosed"]),
        ("{x}-{1..2}", ["{x}-1", "{x}-2"]),
    ],
)
def test_brace_expansion(pattern: str, expected: list[str]) -> None:
    assert expand_braces(pattern) == expected


def test_a_list_of_patterns_is_expanded_in_order() -> None:
    assert expand_urls(["b-{1..2}", "a"]) == ["b-1", "b-2", "a"]
    assert expand_urls("one") == ["one"]


def test_zero_step_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="step"):
        expand_braces("{1..5..0}")


def test_enough_shards_are_split_by_shard() -> None:
    shards = [f"s{i}" for i in range(7)]
    plans = [plan_part(shards, Partition(i, 3)) for i in range(3)]
    assert plans == [
        ShardPlan(["s0", "s3", "s6"]),
        ShardPlan(["s1", "s4"]),
        ShardPlan(["s2", "s5"]),
    ]


@pytest.mark.parametrize(("shards", "parts"), [(1, 3), (2, 5), (3, 4), (4, 12), (5, 7)])
def test_fewer_shards_than_parts_share_shards_by_sample(shards: int, parts: int) -> None:
    names = [f"s{i}" for i in range(shards)]
    plans = [plan_part(names, Partition(i, parts)) for i in range(parts)]
    assert all(len(plan.shards) == 1 for plan in plans)
    covered: set[tuple[str, int]] = set()
    for plan in plans:
        for sample in range(60):  # sample numbers in the shard, any shard length
            if sample % plan.keep_count == plan.keep_index:
                pair = (plan.shards[0], sample)
                assert pair not in covered
                covered.add(pair)
    assert covered == {(name, sample) for name in names for sample in range(60)}
