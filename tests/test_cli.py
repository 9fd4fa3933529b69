"""`python -m datago bench` and `demo`, run through `main()` on small generated folders."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from datago.cli import main
from datago.imaging.buckets import BucketTable
from tests.helpers import path_of, write_images

REPORT_KEYS = {
    "samples", "elapsed_s", "images_per_s", "mb_per_s", "bytes_read", "first_sample_s",
    "read_s", "decode_s", "transform_s", "wait_s", "skipped", "source_errors", "skip_reasons",
    "consumer_cpu_s", "process_cpu_s", "decoders",
}  # fmt: skip


def bench_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["bench", *argv, "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1  # one JSON object, nothing else on stdout
    report: dict[str, object] = json.loads(out)
    return report


def test_bench_file_source_reports_every_number(tmp_path, capsys):
    write_images(tmp_path, 12)
    report = bench_json(capsys, "--source", "file", "--path", str(tmp_path), "--limit", "8")
    assert set(report) == REPORT_KEYS
    assert report["samples"] == 8
    assert report["skipped"] == report["source_errors"] == 0
    assert isinstance(report["bytes_read"], int) and report["bytes_read"] > 0
    assert isinstance(report["images_per_s"], float) and report["images_per_s"] > 0
    assert isinstance(report["decode_s"], float) and report["decode_s"] > 0
    decoders = report["decoders"]
    assert isinstance(decoders, dict) and decoders["simplejpeg"] >= 4  # half are JPEGs
    assert sum(decoders.values()) >= 8


def test_bench_config_file_with_resize_counts_a_corrupt_image(tmp_path, capsys):
    write_images(tmp_path / "images", 6)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    config = {"source_type": "file", "source_config": {"root_path": str(tmp_path / "images")}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    report = bench_json(capsys, "--config", str(tmp_path / "config.json"), "--image-size", "64")
    assert report["samples"] == 6
    assert report["skipped"] == 1
    assert isinstance(report["transform_s"], float) and report["transform_s"] > 0


def test_bench_webdataset_local_shard(tmp_path, capsys):
    jpegs = [path_of(i) for i in write_images(tmp_path / "images", 6) if i.endswith('.jpg"')]
    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:
        for index, path in enumerate(jpegs):
            tar.add(path, arcname=f"s{index}.jpg")
    url = str(tmp_path / "shard-{000..000}.tar")
    report = bench_json(capsys, "--source", "webdataset", "--url", url, "--image-size", "64")
    assert report["samples"] == len(jpegs) == 3
    assert report["source_errors"] == 0


def test_bench_webdataset_needs_a_url(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--source", "webdataset"])
    assert exit_info.value.code == 2
    assert "--url" in capsys.readouterr().err


def test_bench_prints_a_human_summary(tmp_path, capsys):
    write_images(tmp_path, 4)
    assert main(["bench", "--source", "file", "--path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "samples: 4 in" in out
    assert "img/s" in out and "consumer thread" in out


def test_demo_lists_buckets(tmp_path: Path, capsys):
    assert main(["demo", "--folder", str(tmp_path / "demo"), "--count", "3"]) == 0
    out = capsys.readouterr().out
    assert "samples: 3" in out
    buckets = out.split("buckets (width x height: images):\n", 1)[1].splitlines()
    sizes = {(int(line.split()[0]), int(line.split()[2])) for line in buckets}
    assert sizes and sizes <= set(BucketTable.build(512, 32, 0.5, 2.0).sizes.values())
    assert sum(int(line.split()[-1]) for line in buckets) == 3


def test_bench_on_a_missing_folder_says_so_in_one_line(tmp_path, capsys):
    missing = str(tmp_path / "nope")
    assert main(["bench", "--source", "file", "--path", missing]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("python -m datago bench: SourceError")
    assert len(captured.err.splitlines()) == 1 and missing in captured.err


def test_bench_json_reports_a_bad_config_as_an_error_object(tmp_path, capsys):
    write_images(tmp_path, 2)
    assert main(["bench", "--source", "file", "--path", str(tmp_path), "--limit", "0", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"error"}
    assert report["error"].startswith("ConfigError: limit")
