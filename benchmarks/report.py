"""Markdown tables from the JSON lines of `benchmarks.run`.

python -m benchmarks.report benchmarks/results/NAME.jsonl   # prints the tables again
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

IMPL_NAMES = {
    "raw": "raw limit (in memory, 2 threads)",
    "torch": "torch DataLoader nw=2 + Pillow",
    "dali": "DALI on CPU, batch 16",
    "wds": "webdataset lib, DataLoader nw=2",
    "rust": "Rust datago",
    "ours": "datago-py (ours)",
}
PEERS = ("raw", "torch", "dali", "wds", "rust")
SHORT = {"raw": "raw", "torch": "torch", "dali": "DALI", "wds": "wds", "rust": "Rust"}
Row = dict[str, Any]


def load(path: Path) -> list[Row]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def render(rows: Iterable[Row]) -> str:
    """The summary (medians and ratios), the per-loader details and our stage times."""
    runs: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        if "error" not in row:
            runs[row["workload"], row["impl"]].append(row)
    workloads = list(dict.fromkeys(workload for workload, _ in runs))
    return "\n".join(
        [*_summary(runs, workloads), "", *_details(runs, workloads), "", *_stages(runs)]
    )


def _summary(runs: dict[tuple[str, str], list[Row]], workloads: list[str]) -> list[str]:
    names = ["raw limit", "torch", "DALI", "webdataset", "Rust datago", "ours"]
    ratio_names = [f"ours/{SHORT[peer]}" for peer in PEERS]
    lines = [
        f"| workload | {' | '.join(names + ratio_names)} |",
        "|---|" + "---|" * (len(names) + len(ratio_names)),
    ]
    for workload in workloads:
        rates = {impl: _rates(runs.get((workload, impl), [])) for impl in IMPL_NAMES}
        cells = [_rate_cell(rates[impl]) for impl in IMPL_NAMES]
        ours = rates["ours"]
        ratios = [
            f"{statistics.median(ours) / statistics.median(rates[other]):.2f}x"
            if ours and rates[other]
            else "-"
            for other in PEERS
        ]
        lines.append(f"| {workload} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    return lines


def _details(runs: dict[tuple[str, str], list[Row]], workloads: list[str]) -> list[str]:
    lines = [
        "| workload | loader | img/s | min..max | MB/s | first sample s | consumer CPU "
        "(% of a core) | process CPU (cores) | machine busy (cores) | CPU ms/img | "
        "server CPU ms/img | runs | checks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for workload in workloads:
        megapixels = max(
            _median(found, "megapixels") for (w, _), found in runs.items() if w == workload
        )
        for impl, name in IMPL_NAMES.items():
            found = runs.get((workload, impl))
            if not found:
                continue
            rate = statistics.median(_rates(found))
            lo, hi = min(_rates(found)), max(_rates(found))
            mb = rate * found[0]["image_bytes"] / found[0]["count"] / 1e6
            first = _median(found, "first_sample_s")
            consumer = _median(found, "consumer_cpu_s", per="wall_s") * 100
            cores = _median(found, "process_cpu_s", per="wall_s")
            machine = _median(found, "machine_busy_cores")
            cpu_ms = _median(found, "process_cpu_s", per="samples") * 1e3
            served = all("server_cpu_s" in row for row in found)
            server_ms = f"{_median(found, 'server_cpu_s', per='samples') * 1e3:.1f}"
            lines.append(
                f"| {workload} | {name} | **{rate:.1f}** | {lo:.1f}..{hi:.1f} | {mb:.1f} | "
                f"{first:.3f} | {consumer:.0f}% | {cores:.2f} | {machine:.2f} | {cpu_ms:.1f} | "
                f"{server_ms if served else '-'} | {len(found)} | {_checks(found, megapixels)} |"
            )
    return lines


def _stages(runs: dict[tuple[str, str], list[Row]]) -> list[str]:
    lines = [
        "datago-py stage times per image (ms, summed over threads; medians) and the share of "
        "the wall time the consumer waited:",
        "",
        "| workload | read | decode | transform | consumer waiting | skipped | decoders |",
        "|---|---|---|---|---|---|---|",
    ]
    for (workload, impl), found in runs.items():
        if impl != "ours":
            continue
        stage = [_median(found, key, per="samples") * 1e3 for key in ("read_s", "decode_s")]
        transform = _median(found, "transform_s", per="samples") * 1e3
        waiting = _median(found, "wait_s", per="wall_s") * 100
        skipped = max(row.get("skipped", 0) for row in found)
        decoders = ", ".join(sorted(found[-1].get("decoders", {}))) or "-"
        lines.append(
            f"| {workload} | {stage[0]:.2f} | {stage[1]:.2f} | {transform:.2f} | "
            f"{waiting:.0f}% | {skipped} | {decoders} |"
        )
    return lines


def _rates(found: list[Row]) -> list[float]:
    return [row["images_per_s"] for row in found]


def _rate_cell(rates: list[float]) -> str:
    if not rates:
        return "-"
    return f"**{statistics.median(rates):.1f}** ({min(rates):.0f}..{max(rates):.0f})"


def _median(found: list[Row], key: str, per: str | None = None) -> float:
    values = [row.get(key, 0.0) / (row[per] if per else 1) for row in found if not per or row[per]]
    return float(statistics.median(values))


def _checks(found: list[Row], megapixels: float) -> str:
    """`ok`, or what went wrong: a sample count off the limit, fewer pixels than the other loaders
    delivered, outputs off the bucket sizes."""
    problems = []
    least = min(row["megapixels"] for row in found)
    if least < megapixels * 0.999:
        problems.append(f"{least:.1f} of {megapixels:.1f} MP")
    wrong = [row["samples"] for row in found if row["samples"] != row["count"]]
    if wrong:
        problems.append(f"samples {wrong} of {found[0]['count']}")
    bad = max(row["bad_shape"] for row in found)
    if bad:
        problems.append(f"{bad} off-bucket")
    return ", ".join(problems) or "ok"


def main() -> None:
    print(render(load(Path(sys.argv[1]))))


if __name__ == "__main__":
    main()
