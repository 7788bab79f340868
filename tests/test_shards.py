"""WebDataset shards: written from folders, read back image for image, streamed by rank and worker."""

import csv
import io
import itertools
import json
import subprocess
import sys
import tarfile
from collections import Counter

import numpy as np
import pytest

from conftest import AWKWARD_FILES, toy_config
from synthdet.config import SourceConfig, SplitFractions
from synthdet.data.loader import ImageDataset, ShardStream, decode_item, make_loader
from synthdet.data.sharding import index_shards, write_shards
from synthdet.data.shards import read_index, read_member
from synthdet.data.sources import ImageRecord, collect_records, read_split_csv, sources_from_arguments
from synthdet.data.storage import expand_braces
from synthdet.data.transforms import EvalTransform
from synthdet.pipeline import train


def small(sources, n):
    return [SourceConfig(**{**s, "max_images": n}) for s in sources]


@pytest.fixture(scope="module")
def sharded(toy_sources, tmp_path_factory):
    """40 toy images of each source in shards of 25, plus the records they came from."""
    records = collect_records(small(toy_sources, 40), SplitFractions())
    out = tmp_path_factory.mktemp("shards")
    shards, skipped = write_shards(records, out, per_shard=25, name="pool")
    assert len(skipped) == 0
    return out, records, shards


def test_shards_round_trip_labels_splits_and_pixels(sharded):
    out, records, shards = sharded
    assert sorted(p.name for p in out.iterdir()) == ["index.json"] + [f"pool-{i:06d}.tar" for i in range(7)]
    back = collect_records([SourceConfig(shards=str(out))], SplitFractions(train=0.5, val=0.25, test=0.25))
    assert len(back) == len(records) == 160
    original = {r.path: r for r in records}
    for record in back:
        meta = json.loads(read_member(record.path.rsplit(".", 1)[0] + ".json"))
        source = original[meta["file"]]
        # splits are the ones fixed when sharding, whatever data.splits the reader asks for
        assert (record.label, record.source, record.group, record.split) == (
            source.label, source.source, source.group, source.split)
        assert np.array_equal(decode_item(record.path, 0).pixels, decode_item(source.path, 0).pixels)
    # the index alone gives the class counts of every shard
    index = json.loads((out / "index.json").read_text())
    assert index["__kind__"] == "wids-shard-index-v1" and sum(e["nsamples"] for e in index["shardlist"]) == 160
    real = sum(e["counts"].get(s, {}).get("real", 0) for e in index["shardlist"] for s in e["counts"])
    assert real == sum(r.label == 0 for r in records) == 80


def test_a_brace_pattern_selects_shards_and_the_command_line_finds_them(sharded):
    out = sharded[0]
    assert expand_braces("a-{008..010}.tar") == ["a-008.tar", "a-009.tar", "a-010.tar"]
    assert expand_braces("{x,y}-{1..2}") == ["x-1", "x-2", "y-1", "y-2"]
    two = collect_records([SourceConfig(shards=f"{out}/pool-{{000001..000002}}.tar")], SplitFractions())
    assert len(two) == 50 and {r.path.split("#")[0].rsplit("-", 1)[1] for r in two} == {"000001.tar", "000002.tar"}
    assert sources_from_arguments([str(out)])[0].shards == str(out)


def test_index_of_shards_written_by_another_tool(tmp_path):
    """Labels from .cls or .json, splits hashed by group where the shard names none."""
    shard = tmp_path / "other-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for key, extra in [("a", ("cls", b"1")), ("b", ("json", b'{"label": "real", "group": "g1"}')),
                           ("c", ("json", b'{"label": "fake", "split": "test"}'))]:
            for name, data in [(f"{key}.png", b"png bytes"), (f"{key}.{extra[0]}", extra[1])]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    index_shards([str(shard)], str(tmp_path / "index.json"), "other", SplitFractions())
    name, [indexed] = read_index(str(tmp_path / "index.json"))
    samples = {s.member: s for s in indexed.samples}
    assert name == "other" and [samples[m].label for m in ("a.png", "b.png", "c.png")] == [1, 0, 1]
    assert samples["b.png"].group == "g1" and samples["a.png"].group == "other/a"
    assert samples["c.png"].split == "test" and all(s.split in ("train", "val", "test") for s in indexed.samples)


def _one_cycle(stream: ShardStream) -> list[int]:
    """Indices a reader yields before its first repeat (with buffer 0 and no balancing: one pass)."""
    seen = []
    for index, *_ in stream:
        if index in seen:
            return seen
        seen.append(index)


@pytest.mark.parametrize("per_shard", [25, 200])  # 7 shards for 2 readers; 1 shard: every 2nd image each
def test_each_rank_streams_a_distinct_part(sharded, tmp_path, per_shard):
    out, records, _ = sharded
    if per_shard != 25:
        out = tmp_path / "one"
        write_shards(records, out, per_shard=per_shard)
    train = [r for r in collect_records([SourceConfig(shards=str(out))], SplitFractions()) if r.split == "train"]
    parts = [_one_cycle(ShardStream([r.path for r in train], [r.label for r in train], EvalTransform((32, 32)),
                                    balance=False, rank=rank, world=2, buffer=0)) for rank in (0, 1)]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == list(range(len(train)))


def test_the_stream_balances_classes_by_repetition(sharded, tmp_path):
    """Four real images for each synthetic one: the stream still serves both classes about equally."""
    _, records, _ = sharded
    real = [r for r in records if r.label == 0]
    write_shards(real + [r for r in records if r.label == 1][: len(real) // 4], tmp_path, per_shard=25)
    back = collect_records([SourceConfig(shards=str(tmp_path))], SplitFractions())
    assert Counter(r.label for r in back) == {0: 80, 1: 20}
    stream = ShardStream([r.path for r in back], [r.label for r in back], EvalTransform((32, 32)), buffer=16)
    labels = Counter(label for _, label, *_ in itertools.islice(stream, 2000))
    assert labels[1] / 2000 == pytest.approx(0.5, abs=0.05)
    unbalanced = ShardStream([r.path for r in back], [r.label for r in back], EvalTransform((32, 32)),
                             balance=False, buffer=16)
    labels = Counter(label for _, label, *_ in itertools.islice(unbalanced, 2000))
    assert labels[1] / 2000 == pytest.approx(0.2, abs=0.05)


def test_bad_samples_and_broken_shards_are_reported_not_fatal(sharded, tmp_path):
    """A corrupt image in a shard, and a shard cut short, come out as failures naming the sample."""
    _, records, _ = sharded
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"not a jpeg at all")
    records = records[:30] + [ImageRecord(str(bad), 0, "awkward", "train", "awkward/corrupt.jpg")]
    out = tmp_path / "bad"
    shards, _ = write_shards(records, out, per_shard=20)
    cut = out / "shard-000001.tar"
    cut.write_bytes(cut.read_bytes()[:3000])  # truncated in the middle of its second sample
    back = collect_records([SourceConfig(shards=str(out), split="train")], SplitFractions())
    corrupt = next(r.path for r in back if r.source == "awkward")

    stream = ShardStream([r.path for r in back], [r.label for r in back], EvalTransform((32, 32)), buffer=0)
    failures = {}
    for batch in itertools.islice(make_loader(stream, 8, workers=0), 12):
        failures.update({back[i].path: reason for i, reason in batch.failures})
    assert "not an image Pillow can identify" in failures[corrupt]
    lost = [p for p, reason in failures.items() if "cannot read the shard" in reason]
    assert lost and all(p.startswith(str(cut)) for p in lost)

    # read one by one (validation, evaluation, predict): the same reason, and the other images decode
    dataset = ImageDataset([r.path for r in back], EvalTransform((32, 32)))
    reasons = {back[i].path: dataset[i][3] for i in range(len(back)) if dataset[i][2] is None}
    assert "not an image Pillow can identify" in reasons[corrupt]
    assert all(p.startswith(str(cut)) for p in reasons if p != corrupt)


@pytest.mark.slow
def test_a_run_on_shards_streams_them_and_lists_bad_samples(toy_sources, awkward_folder, tmp_path):
    """`synthdet data shard` a config with an awkward validation source, then train on the shards."""
    sources = [{**s, "max_images": 20} for s in toy_sources]
    sources.append({"name": "awkward", "path": str(awkward_folder), "label": "real", "split": "val"})
    config = toy_config(sources, tmp_path / "runs", epochs=1, batch_size=16)
    config.data.crop = (32, 32)
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    proc = subprocess.run([sys.executable, "-m", "synthdet", "data", "shard", tmp_path / "config.yaml",
                           tmp_path / "shards", "--per-shard", "15"], capture_output=True, text=True)
    assert proc.returncode == 0 and "wrote 87 images in 6 shard(s)" in proc.stdout, proc.stderr

    config.data.sources = sources_from_arguments([tmp_path / "shards"])
    result = train(config, progress=False, report=False)
    history = json.loads((result.run_dir / "metrics.jsonl").read_text())
    assert history["train_images"] == 16 * (sum(r.split == "train" for r in read_split_csv(
        result.run_dir / "splits.csv")) // 16)  # an epoch of a stream is as many batches as of a sampler
    with (result.run_dir / "skipped.csv").open() as fh:
        skipped = {row["path"]: row for row in csv.DictReader(fh)}
    files = {path: json.loads(read_member(path.rsplit(".", 1)[0] + ".json"))["file"] for path in skipped}
    assert {f.rsplit("/", 1)[-1] for f in files.values()} == {n for n, reason in AWKWARD_FILES.items() if reason}
    for path, row in skipped.items():
        assert row["stage"] == "val" and AWKWARD_FILES[files[path].rsplit("/", 1)[-1]] in row["reason"]
    assert result.test.metrics["n"] > 0  # the test split is read image by image from the shards
