"""``synthdet data pull|shard|index``, ``toy-data`` and ``import-cifake``: images and weights to train on."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import List, Optional

import typer
import yaml
from rich.table import Table

from synthdet.cli.common import LABEL, add_command, err, out
from synthdet.config import ConfigError, SplitFractions, load_config
from synthdet.data.shards import locate
from synthdet.data.sources import IgnoredFiles, collect_records, sources_from_arguments

app = typer.Typer(help="Get training data, and shard it.", no_args_is_help=True)


def pull(
    manifests: List[Path] = typer.Argument(
        ..., help="pool manifests: source,label,repo,commit,path,sha1[,generator,...] (several: e.g. "
                  "../shared/pool/manifest.csv pools/real-photos.csv pools/modern-fakes.csv)"),
    out_dir: Path = typer.Argument(..., help="gets <source>/<label>/<file>, manifest.csv and pull_report.csv"),
    mirror: Optional[Path] = typer.Option(
        None, help="folder of bare git copies: <owner>+<name>/repo, <owner>+<name> or <owner>/<name>.git"
    ),
    git_base: Optional[str] = typer.Option(
        None, help="fetch URL/<owner>/<name> at each commit instead (e.g. https://github.com), cached in OUT/.git-cache"
    ),
    jobs: int = typer.Option(4, min=1, help="repositories read at once"),
):
    """Write the images that pool manifests list, from git repositories, checking each file's sha1.

    Files already in place are kept, so an interrupted pull resumes. Exit 0 when every file
    is in place, 1 when some are missing or fail their sha1 (the rest is written; every row
    is in OUT/pull_report.csv), 2 for a bad manifest. Train with --data OUT/manifest.csv.
    """
    from synthdet.data.pull import MISMATCH, MISSING, PRESENT, WRITTEN, pull_pool

    if (mirror is None) == (git_base is None):
        raise typer.BadParameter("give exactly one of --mirror DIR or --git-base URL")
    result = pull_pool(manifests, out_dir, mirror=mirror, git_base=git_base, jobs=jobs, progress=True)
    table = Table("source", "written", "already present", "missing", "sha1 mismatch", title=f"Pulled into {out_dir}")
    for source, counts in result.counts().items():
        table.add_row(source, *(str(counts[s]) for s in (WRITTEN, PRESENT, MISSING, MISMATCH)))
    out.print(table)
    problems = result.problems()
    for file, outcome in problems[:20]:
        err.print(f"  {outcome.status}: {file.repo}:{file.path}: {outcome.detail}", markup=False, highlight=False)
    if len(problems) > 20:
        err.print(f"  ... and {len(problems) - 20} more", markup=False)
    out.print(f"{len(result.files) - len(problems)} of {len(result.files)} files in place in "
              f"{result.seconds:.1f} s; manifest {result.manifest}, report {result.report}")
    if problems:
        raise typer.Exit(1)


def shard(
    sources: List[str] = typer.Argument(..., help="folders, .csv manifests, .yaml configs (their sources) or shards"),
    out_dir: Path = typer.Argument(..., help="folder for NAME-000000.tar, ... and index.json"),
    per_shard: int = typer.Option(1000, min=1, help="images per shard"),
    name: str = typer.Option("shard", help="shard file prefix and the index's name"),
    label: Optional[str] = LABEL,
    splits: Optional[str] = typer.Option(
        None, help="train,val,test fractions for sources without fixed splits (default: the configs' data.splits, "
                   "else 0.8,0.1,0.1)"),
    seed: int = typer.Option(0, help="shuffles the images across shards (and seeds max_images samples)"),
):
    """Write WebDataset tar shards and their index from any source synthdet reads.

    Image files are copied unchanged, shuffled across shards; each sample's label, source,
    group and split go into its .json and the index, so a run on the shards keeps these
    splits. Train with --data OUT (or a source `shards: OUT`). Unreadable files are listed
    in OUT/skipped.csv.
    """
    if splits is not None:
        fractions = _split_fractions(splits)
    else:
        configured = [load_config(s).data.splits for s in sources if Path(s).suffix.lower() in (".yaml", ".yml")]
        if any(c != configured[0] for c in configured):
            raise ConfigError("the configs split their data differently; choose with --splits TRAIN,VAL,TEST")
        fractions = configured[0] if configured else SplitFractions()
    from synthdet.data.sharding import write_shards

    ignored = IgnoredFiles()
    records = collect_records(sources_from_arguments(sources, label), fractions, seed, ignored)
    shards, skipped = write_shards(records, out_dir, per_shard, name, seed, progress=True)
    if len(skipped):
        skipped.write(out_dir / "skipped.csv")
        err.print(f"{skipped.summary()}, see {out_dir / 'skipped.csv'}")
    if ignored.total:
        err.print(f"in the source folders, {ignored}", highlight=False)
    out.print(f"wrote {sum(len(s.samples) for s in shards)} images in {len(shards)} shard(s) and "
              f"{out_dir / 'index.json'}")


def index(
    shards: str = typer.Argument(..., help="shards to index: a .tar or a brace pattern (quoted), local or URL"),
    name: Optional[str] = typer.Option(None, help="the index's name, and the source of samples that name none"),
    splits: str = typer.Option("0.8,0.1,0.1", help="train,val,test fractions for samples without a split"),
):
    """Write index.json beside shards made by another tool (label from each sample's .json or .cls)."""
    from synthdet.data.sharding import index_shards

    location, urls = locate(shards)
    if urls is None:
        raise ConfigError(f"{shards}: name the shards to index "
                          "(a .tar or a pattern such as pool-{000000..000015}.tar)")
    name = name or location.rsplit("/", 2)[-2]
    indexed = index_shards(urls, location, name, _split_fractions(splits))
    out.print(f"indexed {sum(len(s.samples) for s in indexed)} samples in {len(indexed)} shard(s): {location}")


def _split_fractions(text: str) -> SplitFractions:
    try:
        train, val, test = (float(x) for x in text.split(","))
        return SplitFractions(train=train, val=val, test=test)
    except ValueError as exc:
        raise ConfigError(f"--splits must be three fractions that sum to 1, like 0.8,0.1,0.1 ({exc})") from None


add_command(app, pull)
add_command(app, shard)
add_command(app, index)


def demo_config() -> dict:
    """The shipped demo config (resources/demo.yaml), as a dict to fill in with sources and folders."""
    return yaml.safe_load(resources.files("synthdet.resources").joinpath("demo.yaml").read_text())


def toy_data(
    out_dir: Path = typer.Argument(..., help="folder to write the four toy sources into"),
    images_per_source: int = typer.Option(300),
    seed: int = typer.Option(0),
):
    """Write the toy dataset and a config (toy.yaml) that trains on it."""
    from synthdet.data.toy import write_toy_dataset

    sources = write_toy_dataset(out_dir, images_per_source, seed=seed)
    raw = demo_config()
    raw["name"] = "toy"
    raw["data"]["sources"] = [{**s, "path": Path(s["path"]).name} for s in sources]
    (out_dir / "toy.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out.print(f"wrote {len(sources) * images_per_source} images and {out_dir / 'toy.yaml'}")


def import_cifake(
    weights: Path = typer.Argument(..., help="state dict released by jshrdt/aics-project (.pth)"),
    checkpoint: Path = typer.Argument(..., help="synthdet checkpoint to write (.safetensors)"),
    attention: bool = typer.Option(False, help="the SRM-attention variant (SRM_model.pth)"),
):
    """Import a peer project's CIFAKE CNN so it runs through synthdet's evaluate/predict."""
    from synthdet.importers import import_aics_cifake

    out.print(f"wrote {import_aics_cifake(weights, checkpoint, attention)}")
