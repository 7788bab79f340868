from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthdet.config import SourceConfig, SplitFractions
from synthdet.data.sources import SourceError, collect_records, records_from_arguments, split_for, split_rule


def make_images(folder: Path, names: list[str]) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)


@pytest.mark.parametrize(
    "real_dir, fake_dir",
    [("real", "synthetic"), ("real", "fake"), ("0_real", "1_fake"), ("REAL", "FAKE"), ("nature", "ai")],
)
def test_class_subfolder_layouts(tmp_path, real_dir, fake_dir):
    make_images(tmp_path, [f"{real_dir}/a.png", f"{real_dir}/b.png", f"{fake_dir}/c.png"])
    records = collect_records([SourceConfig(path=tmp_path)], SplitFractions())
    labels = {Path(r.path).name: r.label_name for r in records}
    assert labels == {"a.png": "real", "b.png": "real", "c.png": "synthetic"}


def test_cnndetection_layout_nests_class_folders_under_categories(tmp_path):
    make_images(tmp_path, ["progan/cat/0_real/1.png", "progan/cat/1_fake/2.png", "progan/dog/1_fake/3.png"])
    records = collect_records([SourceConfig(path=tmp_path, name="cnndet")], SplitFractions())
    assert Counter(r.label_name for r in records) == {"real": 1, "synthetic": 2}
    assert {r.source for r in records} == {"cnndet"}


def test_images_outside_class_folders_are_an_error_not_silently_dropped(tmp_path):
    make_images(tmp_path, ["real/a.png", "loose.png"])
    with pytest.raises(SourceError, match="not inside a class folder.*loose.png"):
        collect_records([SourceConfig(path=tmp_path)], SplitFractions())


def test_single_label_folder_found_recursively_by_extension(tmp_path):
    make_images(tmp_path, ["a.png", "deep/er/b.jpg", "c.webp"])
    (tmp_path / "notes.txt").write_text("not an image")
    records = collect_records([SourceConfig(path=tmp_path, label="synthetic", name="sim")], SplitFractions())
    assert sorted(Path(r.path).name for r in records) == ["a.png", "b.jpg", "c.webp"]
    assert {r.label_name for r in records} == {"synthetic"}


def test_splits_are_deterministic_and_independent_of_other_files(tmp_path):
    names = [f"{i}.png" for i in range(200)]
    make_images(tmp_path, names)
    source = SourceConfig(path=tmp_path, label="real", name="s")
    first = {r.path: r.split for r in collect_records([source], SplitFractions())}
    make_images(tmp_path, ["extra1.png", "extra2.png"])
    second = {r.path: r.split for r in collect_records([source], SplitFractions())}
    assert all(second[p] == s for p, s in first.items())
    counts = Counter(first.values())
    assert 130 <= counts["train"] <= 190 and counts["val"] > 5 and counts["test"] > 5


def test_split_fractions_are_respected_on_many_keys():
    fractions = SplitFractions(train=0.6, val=0.2, test=0.2)
    counts = Counter(split_for(f"k{i}", fractions) for i in range(20000))
    assert counts["train"] / 20000 == pytest.approx(0.6, abs=0.02)
    assert counts["val"] / 20000 == pytest.approx(0.2, abs=0.02)


def test_group_by_folder_keeps_each_sequence_in_one_split(tmp_path):
    make_images(tmp_path, [f"seq{s}/frame{f}.png" for s in range(30) for f in range(5)])
    source = SourceConfig(path=tmp_path, label="synthetic", group_by="folder")
    records = collect_records([source], SplitFractions())
    splits_per_sequence = {}
    for r in records:
        splits_per_sequence.setdefault(Path(r.path).parent.name, set()).add(r.split)
    assert all(len(s) == 1 for s in splits_per_sequence.values())
    assert len({next(iter(s)) for s in splits_per_sequence.values()}) >= 2  # sequences still spread over splits


def test_group_by_name_keeps_one_prompt_of_every_generator_in_one_split(tmp_path):
    generators = ("sdxl", "kandinsky", "pixart")
    make_images(tmp_path, [f"{g}/{p}.png" for g in generators for p in range(40)])
    records = collect_records([SourceConfig(path=tmp_path, label="synthetic", group_by="name")], SplitFractions())
    splits_per_prompt = {}
    for r in records:
        splits_per_prompt.setdefault(Path(r.path).stem, set()).add(r.split)
    assert len(splits_per_prompt) == 40 and all(len(s) == 1 for s in splits_per_prompt.values())
    assert {next(iter(s)) for s in splits_per_prompt.values()} == {"train", "val", "test"}


def test_max_images_is_a_seeded_sample(tmp_path):
    make_images(tmp_path, [f"{i}.png" for i in range(50)])
    source = SourceConfig(path=tmp_path, label="real", max_images=10)
    a = collect_records([source], SplitFractions(), seed=1)
    b = collect_records([source], SplitFractions(), seed=1)
    c = collect_records([source], SplitFractions(), seed=2)
    assert len(a) == 10 and a == b and a != c


def test_manifest_with_split_source_and_group_columns(tmp_path):
    make_images(tmp_path, ["img/a.png", "img/b.png", "img/c.png", "img/d.png"])
    (tmp_path / "m.csv").write_text(
        "path,label,source,split,group\n"
        "img/a.png,real,cam,train,g1\nimg/b.png,fake,gan,test,g2\n"
        "img/c.png,synthetic,gan,,g3\nimg/d.png,0,cam,val,g1\n"
    )
    records = collect_records([SourceConfig(manifest=tmp_path / "m.csv")], SplitFractions())
    by_name = {Path(r.path).name: r for r in records}
    assert by_name["a.png"].split == "train" and by_name["b.png"].split == "test"
    assert by_name["b.png"].label_name == "synthetic" and by_name["d.png"].label_name == "real"
    assert {r.source for r in records} == {"cam", "gan"}
    assert by_name["c.png"].split in ("train", "val", "test")


def test_manifest_errors_name_file_and_line(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\na.png,maybe\n")
    with pytest.raises(SourceError, match=r"m.csv:2: unknown label 'maybe'"):
        collect_records([SourceConfig(manifest=tmp_path / "m.csv")], SplitFractions())


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="is not a folder"):
        collect_records([SourceConfig(path=tmp_path / "nope", label="real")], SplitFractions())


def test_folder_argument_is_all_test_data(tmp_path):
    make_images(tmp_path, [f"real/{i}.png" for i in range(20)] + [f"fake/{i}.png" for i in range(20)])
    records = records_from_arguments([tmp_path])
    assert len(records) == 40 and {r.split for r in records} == {"test"}


def splits_by_folder(records, root: Path) -> dict[str, Counter]:
    """Split counts per top folder of the source (train/, test/, ...)."""
    table: dict[str, Counter] = {}
    for r in records:
        table.setdefault(Path(r.path).relative_to(root).parts[0], Counter())[r.split] += 1
    return table


def test_cifake_layout_takes_train_and_test_folders_and_carves_val_from_train(tmp_path):
    make_images(tmp_path, [f"train/{c}/{i}.jpg" for c in ("REAL", "FAKE") for i in range(300)]
                + [f"test/{c}/{i}.jpg" for c in ("REAL", "FAKE") for i in range(50)])
    source = SourceConfig(path=tmp_path, name="cifake")
    records = collect_records([source], SplitFractions())
    by_folder = splits_by_folder(records, tmp_path)
    assert by_folder["test"] == {"test": 100}
    assert set(by_folder["train"]) == {"train", "val"}
    assert 0.06 <= by_folder["train"]["val"] / 600 <= 0.14  # data.splits.val (10%) of train/, by hash
    assert Counter((r.split, r.label_name) for r in records if r.split == "test") == {("test", "real"): 50,
                                                                                      ("test", "synthetic"): 50}
    rule = split_rule(source, SplitFractions())
    assert rule == "splits from folders train/, test/; val 10% of train/ (hashed by file)"
    again = collect_records([source], SplitFractions(train=0.7, val=0.1, test=0.2))
    assert again == records  # test and hash fractions do not move images between folder splits


def test_cnndetection_layout_uses_all_three_folders_with_classes_under_generators(tmp_path):
    names = [f"{split}/{gen}/{cls}/{i}.png" for split, gens in (("train", ["car", "cat"]), ("val", ["car"]),
                                                               ("test", ["stylegan", "biggan"]))
             for gen in gens for cls in ("0_real", "1_fake") for i in range(3)]
    make_images(tmp_path, names)
    records = collect_records([SourceConfig(path=tmp_path, name="cnndet")], SplitFractions())
    assert splits_by_folder(records, tmp_path) == {"train": {"train": 12}, "val": {"val": 6}, "test": {"test": 12}}
    assert Counter(r.label_name for r in records if r.split == "test") == {"real": 6, "synthetic": 6}
    assert split_rule(SourceConfig(path=tmp_path), SplitFractions()) == "splits from folders train/, val/, test/"


def test_genimage_layout_has_train_and_val_and_no_test(tmp_path):
    make_images(tmp_path, [f"{split}/{cls}/{i}.png" for split in ("train", "val") for cls in ("ai", "nature")
                           for i in range(4)])
    records = collect_records([SourceConfig(path=tmp_path)], SplitFractions())
    assert splits_by_folder(records, tmp_path) == {"train": {"train": 8}, "val": {"val": 8}}
    assert Counter(r.label_name for r in records if r.split == "val") == {"real": 4, "synthetic": 4}
    assert records_from_arguments([tmp_path], split="val") == [r for r in records if r.split == "val"]


def test_split_folder_names_are_case_insensitive_and_long_forms_count(tmp_path):
    make_images(tmp_path, ["Training/real/a.png", "VALIDATION/fake/b.png", "Testing/real/c.png"])
    source = SourceConfig(path=tmp_path)
    assert {Path(r.path).name: r.split for r in collect_records([source], SplitFractions())} == {
        "a.png": "train", "b.png": "val", "c.png": "test"}
    assert split_rule(source, SplitFractions()) == "splits from folders Training/, VALIDATION/, Testing/"


def test_split_folders_ignore_hashes_every_image_and_use_requires_them(tmp_path):
    make_images(tmp_path, [f"train/real/{i}.png" for i in range(100)] + [f"test/fake/{i}.png" for i in range(100)])
    ignored = SourceConfig(path=tmp_path, split_folders="ignore")
    by_folder = splits_by_folder(collect_records([ignored], SplitFractions()), tmp_path)
    assert set(by_folder["train"]) == set(by_folder["test"]) == {"train", "val", "test"}
    assert split_rule(ignored, SplitFractions()) == "hashed by file: train/val/test 80%/10%/10%"
    plain = tmp_path / "plain"
    make_images(plain, ["real/a.png", "fake/b.png"])
    with pytest.raises(SourceError, match="split_folders is 'use' but there is no train/"):
        collect_records([SourceConfig(path=plain, split_folders="use")], SplitFractions())


def test_images_outside_the_split_folders_are_an_error(tmp_path):
    make_images(tmp_path, ["train/real/a.png", "test/fake/b.png", "extra/real/c.png"])
    with pytest.raises(SourceError, match=r"outside them \(e.g. extra/real/c.png\).*split_folders: ignore"):
        collect_records([SourceConfig(path=tmp_path)], SplitFractions())


def test_a_source_put_whole_into_one_split_ignores_its_folders(tmp_path):
    make_images(tmp_path, ["train/real/a.png", "test/fake/b.png"])
    source = SourceConfig(path=tmp_path, split="test")
    assert {r.split for r in collect_records([source], SplitFractions())} == {"test"}
    assert split_rule(source, SplitFractions()) == "every image in test (split: test)"


def test_evaluating_a_folder_with_split_folders_scores_its_test_folder(tmp_path):
    make_images(tmp_path, [f"{split}/{cls}/{i}.png" for split in ("train", "test") for cls in ("real", "fake")
                           for i in range(5)])
    test = records_from_arguments([tmp_path])
    assert len(test) == 10 and all(Path(r.path).relative_to(tmp_path).parts[0] == "test" for r in test)
    assert len(records_from_arguments([tmp_path], split="all")) == 20
