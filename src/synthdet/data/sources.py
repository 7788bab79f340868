"""Find the images of each source, label them and assign deterministic splits.

A dataset is a list of :class:`ImageRecord` built from :class:`~synthdet.config.SourceConfig`
entries. Nothing is decoded here: bad files are found (and reported) when they are read.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections import Counter
from dataclasses import dataclass, asdict
from pathlib import Path
from typing import Callable

from synthdet.config import SourceConfig, SplitFractions, load_config
from synthdet.data.decode import image_extensions
from synthdet.data.labels import CLASS_NAMES, LABEL_ALIASES, parse_label
from synthdet.data.shards import INDEX_NAME, load_shards, member_ref
from synthdet.data.storage import is_url
from synthdet.rundir import atomic_path

SPLITS = ("train", "val", "test")

#: Subfolder names (lower case) under which datasets ship their own splits: CIFAKE
#: (train/ test/), CNNDetection (train/ val/ test/), GenImage (train/ val/).
SPLIT_FOLDER_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}


class SourceError(ValueError):
    """A source that cannot be enumerated (missing folder, bad manifest, no labels)."""


@dataclass
class IgnoredFiles:
    """What folder scans passed over, by reason, so every file below a folder is accounted for."""

    hidden: int = 0  # names starting with a dot; a hidden folder counts once and is not searched
    other_extension: int = 0  # files with an extension Pillow does not read

    @property
    def total(self) -> int:
        return self.hidden + self.other_extension

    def __str__(self) -> str:
        return f"ignored {self.total} file(s): {self.hidden} hidden, {self.other_extension} with other extensions"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ImageRecord:
    path: str
    label: int  # index into CLASS_NAMES
    source: str
    split: str  # train | val | test
    group: str  # images sharing a group always share a split

    @property
    def label_name(self) -> str:
        return CLASS_NAMES[self.label]


def stable_fraction(key: str) -> float:
    """Map a string to [0, 1) identically on every machine and Python version."""
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def group_key(path: str, group_by: str) -> str:
    """What a file shares with the files that must land in its split: itself, its folder, or its name.

    ``name`` keeps prompt-matched sets together: one folder per generator, one file per
    prompt (``sdxl/17.jpg`` and ``kandinsky/17.jpg`` go to the same split).
    """
    folder, _, file = path.rpartition("/")
    if group_by == "folder":
        return folder
    if group_by == "name":
        return file.rsplit(".", 1)[0]
    return path


def split_for(group: str, fractions: SplitFractions) -> str:
    """Split of a group from the stable hash of its key."""
    u = stable_fraction(group)
    if u < fractions.train:
        return "train"
    if u < fractions.train + fractions.val:
        return "val"
    return "test"


def split_folders(source: SourceConfig) -> dict[str, str]:
    """The source folder's own split subfolders (name -> split), when its splits come from them.

    They apply to a folder source with ``split: auto`` unless ``split_folders: ignore``;
    ``split_folders: use`` makes their absence an error instead of falling back to hashing.
    """
    if source.path is None or source.split != "auto" or source.split_folders == "ignore":
        return {}
    found = {entry.name: SPLIT_FOLDER_NAMES[entry.name.lower()] for entry in os.scandir(source.path)
             if entry.is_dir() and entry.name.lower() in SPLIT_FOLDER_NAMES}
    if not found and source.split_folders == "use":
        raise SourceError(f"{source.path}: split_folders is 'use' but there is no train/, val/ or test/ subfolder")
    return dict(sorted(found.items(), key=lambda item: (SPLITS.index(item[1]), item[0])))


def split_rule(source: SourceConfig, fractions: SplitFractions) -> str:
    """How a source's images got their splits, in words (run summary and report)."""
    hashed = (f"hashed by {source.group_by}: train/val/test "
              f"{fractions.train:.0%}/{fractions.val:.0%}/{fractions.test:.0%}")
    if source.shards is not None:
        return "the splits the shards' index fixed when they were written"
    if source.manifest is not None:
        return f"manifest split column; where it is empty, {hashed if source.split == 'auto' else source.split}"
    if source.split != "auto":
        return f"every image in {source.split} (split: {source.split})"
    folders = split_folders(source)
    if not folders:
        return hashed
    rule = "splits from folders " + ", ".join(f"{name}/" for name in folders)
    train_folders = [f"{name}/" for name, split in folders.items() if split == "train"]
    if train_folders and "val" not in folders.values():
        rule += f"; val {fractions.val:.0%} of {' '.join(train_folders)} (hashed by {source.group_by})"
    return rule


def collect_records(
    sources: list[SourceConfig], fractions: SplitFractions, seed: int = 0, ignored: IgnoredFiles | None = None
) -> list[ImageRecord]:
    """All images of all sources, labelled and split; raises :class:`SourceError`.

    Files the folder scans pass over are counted in ``ignored`` when given.
    """
    records: list[ImageRecord] = []
    for source in sources:
        if source.shards is not None:
            found = _shard_records(source)
        elif source.manifest:
            found = _manifest_records(source, fractions)
        else:
            found = _folder_records(source, fractions, ignored)
        if not found:
            where = source.path or source.manifest or source.shards
            raise SourceError(f"{where}: source {source.display_name!r} has no images")
        if source.max_images and len(found) > source.max_images:
            found = random.Random(f"{seed}:{source.display_name}").sample(found, source.max_images)
            found.sort(key=lambda r: r.path)
        records.extend(found)
    return records


def sources_from_arguments(specs: list[str | Path], label: str | None = None) -> list[SourceConfig]:
    """Training sources named on a command line: folders, CSV manifests, or the sources of YAML configs."""
    sources: list[SourceConfig] = []
    for spec in specs:
        if Path(spec).suffix.lower() in (".yaml", ".yml"):
            sources.extend(load_config(spec).data.sources)
        else:
            sources.append(_source_for_path(spec, label, split="auto"))
    return sources


def records_from_arguments(specs: list[str | Path], split: str = "test", label: str | None = None,
                           ignored: IgnoredFiles | None = None) -> list[ImageRecord]:
    """Records to score, named on a command line: YAML configs, folders or CSV manifests.

    From a config, the images of ``split`` (``all`` for every split) are taken, so
    evaluating a training config scores exactly its held-out test images. A folder or a
    manifest given directly is evaluation data: all its images count as test images
    (a manifest's own ``split`` column, a folder's own train/ val/ test/ subfolders and the
    splits of shards, if any, still apply). Files folder scans pass over are counted in
    ``ignored`` when given.
    """
    records: list[ImageRecord] = []
    for spec in specs:
        if Path(spec).suffix.lower() in (".yaml", ".yml"):
            config = load_config(spec)
            found = collect_records(config.data.sources, config.data.splits, config.seed, ignored)
        else:
            found = collect_records([_evaluation_source(spec, label)], SplitFractions(), ignored=ignored)
        records.extend(r for r in found if split == "all" or r.split == split)
    if not records:
        raise SourceError(f"no {split} images in {', '.join(map(str, specs))}")
    return records


def _evaluation_source(spec: str | Path, label: str | None) -> SourceConfig:
    """What to score: all of it, unless a folder ships its own split folders or shards their splits."""
    source = _source_for_path(spec, label, split="auto")
    if source.shards is not None or (source.path is not None and split_folders(source)):
        return source
    return source.model_copy(update={"split": "test"})


def _source_for_path(spec: str | Path, label: str | None, split: str) -> SourceConfig:
    """A folder, a manifest, or tar shards (a URL, a .tar or brace pattern, an index, a folder with an index).

    Shards keep the splits their index fixed, as a manifest keeps its split column.
    """
    text, path = str(spec), Path(spec)
    if is_url(text) or text.endswith((".tar", ".json")) or (path / INDEX_NAME).is_file():
        if label is not None:
            raise SourceError(f"{text}: shards carry their own labels; --label applies to folders")
        return SourceConfig(shards=text if is_url(text) else str(path.resolve()))
    if path.is_dir():
        return SourceConfig(path=path.resolve(), label=label, split=split)
    if path.suffix.lower() == ".csv":
        return SourceConfig(manifest=path.resolve(), label=label, split=split)
    raise SourceError(f"{path}: expected a folder, a .csv manifest, tar shards or a .yaml config")


def iter_image_files(root: str | Path, ignored: IgnoredFiles | None = None, walk: Callable = os.walk):
    """Image files below ``root`` (by extension Pillow knows), sorted, following no symlinked dirs.

    Hidden names (starting with a dot) are skipped, folders included; what is skipped is
    counted in ``ignored`` when given. ``walk`` lists other file systems alike (fsspec's ``fs.walk``).
    """
    extensions = image_extensions()
    ignored = ignored if ignored is not None else IgnoredFiles()
    for dirpath, dirnames, filenames in walk(root):
        ignored.hidden += sum(name.startswith(".") for name in dirnames)
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        for filename in sorted(filenames):
            if filename.startswith("."):
                ignored.hidden += 1
            elif os.path.splitext(filename)[1].lower() not in extensions:
                ignored.other_extension += 1
            else:
                yield Path(dirpath) / filename


def _folder_records(source: SourceConfig, fractions: SplitFractions,
                    ignored: IgnoredFiles | None = None) -> list[ImageRecord]:
    root = source.path
    if not root.is_dir():
        raise SourceError(f"{root}: source {source.display_name!r} is not a folder")
    fixed_label = parse_label(source.label) if source.label else None
    folders = split_folders(source)
    # With no val folder, the usual hash sends data.splits.val of the train folder to val.
    carve = None if "val" in folders.values() else SplitFractions(train=1 - fractions.val, val=fractions.val, test=0)
    records, unlabeled, unsplit = [], [], []
    for file in iter_image_files(root, ignored):
        rel = file.relative_to(root)
        label = fixed_label if fixed_label is not None else label_from_folders(rel)
        if label is None:
            unlabeled.append(str(rel))
            continue
        group = f"{source.display_name}/{group_key(rel.as_posix(), source.group_by)}"
        if folders:
            split = folders.get(rel.parts[0]) if len(rel.parts) > 1 else None
            if split is None:
                unsplit.append(str(rel))
                continue
            if split == "train" and carve is not None:
                split = split_for(group, carve)
        else:
            split = source.split if source.split != "auto" else split_for(group, fractions)
        records.append(ImageRecord(str(file), label, source.display_name, split, group))
    if unlabeled and fixed_label is None:
        examples = ", ".join(unlabeled[:3])
        raise SourceError(
            f"{root}: {len(unlabeled)} image(s) are not inside a class folder (e.g. {examples}); "
            f"give the source a 'label' or put images under real/ and synthetic/ (or fake/, 0_real/ 1_fake/, ...)"
        )
    if unsplit:
        raise SourceError(
            f"{root}: its splits come from its folders {', '.join(folders)}, but {len(unsplit)} image(s) lie "
            f"outside them (e.g. {', '.join(unsplit[:3])}); move them, or set split_folders: ignore to hash every image"
        )
    return records


def label_from_folders(rel: Path) -> int | None:
    """Label from the nearest enclosing folder whose name is a class alias."""
    for part in reversed(rel.parent.parts):
        label = LABEL_ALIASES.get(part.lower())
        if label is not None and not part.isdigit():
            return label
    return None


def _manifest_records(source: SourceConfig, fractions: SplitFractions) -> list[ImageRecord]:
    manifest = source.manifest
    if not manifest.is_file():
        raise SourceError(f"{manifest}: manifest not found")
    with manifest.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or [])
        path_column = "path" if "path" in columns else "file" if "file" in columns else None
        if path_column is None or ("label" not in columns and source.label is None):
            raise SourceError(f"{manifest}: a manifest needs columns 'path' (or 'file') and 'label'")
        records = []
        for line_no, row in enumerate(reader, start=2):
            path = Path(row[path_column])
            if not path.is_absolute():
                path = manifest.parent / path
            try:
                label = parse_label(source.label or row["label"])
            except ValueError as exc:
                raise SourceError(f"{manifest}:{line_no}: {exc}") from None
            name = row.get(source.source_column) or source.display_name
            if source.select and name not in source.select:
                continue
            group = f"{name}/{group_key(row.get('group') or row[path_column], source.group_by)}"
            split = (row.get("split") or "").strip().lower() or source.split
            if split not in (*SPLITS, "auto"):
                raise SourceError(f"{manifest}:{line_no}: split must be train, val or test, got {split!r}")
            if split == "auto":
                split = split_for(group, fractions)
            records.append(ImageRecord(str(path.resolve()), label, name, split, group))
    return records


def _shard_records(source: SourceConfig) -> list[ImageRecord]:
    """The samples a shard index lists, with the splits it fixed (a source's own ``split`` overrides them)."""
    records, unlabeled = [], []
    for shard in load_shards(source.shards)[1]:
        for sample in shard.samples:
            if sample.label is None:
                unlabeled.append(sample.member)
                continue
            split = source.split if source.split != "auto" else sample.split
            records.append(ImageRecord(member_ref(shard.url, sample.member), sample.label, sample.source, split,
                                       sample.group))
    if unlabeled:
        raise SourceError(f"{source.shards}: {len(unlabeled)} sample(s) have no label in a .json or .cls member "
                          f"(e.g. {unlabeled[0]}); label them before training on them")
    return records


def summarize(records: list[ImageRecord]) -> dict:
    """Images per source, split and class: what the checkpoint and report say about the data."""
    table: dict[str, dict[str, dict[str, int]]] = {}
    for (source, split, label), n in sorted(Counter((r.source, r.split, r.label_name) for r in records).items()):
        table.setdefault(source, {}).setdefault(split, {})[label] = n
    return table


def read_split_csv(path: Path, split: str = "all") -> list[ImageRecord]:
    """The records a run wrote to its ``splits.csv`` (optionally one split): its exact data."""
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [
        ImageRecord(row["path"], parse_label(row["label"]), row["source"], row["split"], row["group"])
        for row in rows
        if split == "all" or row["split"] == split
    ]


def write_split_csv(records: list[ImageRecord], path: Path) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "source", "split", "group"])
        writer.writeheader()
        for record in records:
            row = asdict(record)
            row["label"] = record.label_name
            writer.writerow(row)
