from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import toy_config
from synthdet.config import SourceConfig, SplitFractions
from synthdet.data.sources import collect_records
from synthdet.protocols import kfold_test_indices, leave_one_source_out, source_groups


def frames_dataset(root: Path):
    """Two sources, both classes, 12 sequences of 5 frames each per class."""
    for label in ("real", "synthetic"):
        for seq in range(12):
            folder = root / label / f"seq{seq}"
            folder.mkdir(parents=True)
            for f in range(5):
                Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / f"{f}.png")
    return collect_records([SourceConfig(path=root, group_by="folder", name="frames")], SplitFractions())


def test_kfold_folds_are_disjoint_cover_everything_stratified_and_keep_groups(tmp_path):
    records = frames_dataset(tmp_path)
    folds = kfold_test_indices(records, k=4, seed=0)
    assert len(folds) == 4
    flat = [i for fold in folds for i in fold]
    assert sorted(flat) == list(range(len(records)))  # disjoint and complete
    for fold in folds:
        labels = Counter(records[i].label for i in fold)
        assert abs(labels[0] - labels[1]) <= 5  # one sequence of imbalance at most
        groups = {records[i].group for i in fold}
        assert all(records[j].group not in groups for other in folds if other is not fold for j in other)
    assert folds == kfold_test_indices(records, k=4, seed=0)  # seeded
    assert folds != kfold_test_indices(records, k=4, seed=1)


def test_source_groups_merge_named_sources_and_refuse_unknown_ones():
    groups = source_groups(["a", "b", "c"], {"ab": ["a", "b"]})
    assert groups == {"ab": ["a", "b"], "c": ["c"]}
    with pytest.raises(ValueError, match="unknown source"):
        source_groups(["a"], {"x": ["zzz"]})


@pytest.mark.slow
def test_leave_one_source_out_on_four_toy_sources(toy_sources, tmp_path):
    config = toy_config([{**s, "max_images": 40} for s in toy_sources], tmp_path, epochs=2, lr=3e-3)
    config.model.name, config.data.crop = "cifake_cnn", (32, 32)
    config.features.representations = ["srm"]
    summary = leave_one_source_out(config, tmp_path / "loso")
    rows = summary["rows"]
    assert [r["held_out"] for r in rows] == sorted(s["name"] for s in toy_sources)
    assert all(r["status"] == "ok" and r["n"] == 40 for r in rows)
    assert summary["mean_accuracy"] == pytest.approx(np.mean([r["accuracy"] for r in rows]))
    assert summary["std_accuracy"] is not None
    assert (tmp_path / "loso" / "protocol.md").read_text().count("\n| ") == 5  # header + 4 rows
    # the held-out source never entered training
    for row in rows:
        splits = (Path(row["run"]) / "splits.csv").read_text()
        assert f",{row['held_out']}," not in splits
