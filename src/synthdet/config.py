"""Run configuration: one validated tree (data, features, model, train, augment).

Configs are YAML files; ``key=value`` overrides use dotted paths (``train.epochs=3``).
Unknown keys and bad values fail early with the dotted path of the offending key.
Relative paths inside a config are relative to the config file.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    BeforeValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from synthdet.data.decode import DEFAULT_MAX_PIXELS
from synthdet.data.storage import is_url
from synthdet.features import REPRESENTATIONS
from synthdet.models import list_models
from synthdet.weights import KNOWN_WEIGHTS


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the YAML."""


def _parse_crop(value: Any) -> tuple[int, int]:
    """Accept 224, "640x480" (width x height, as people say it) or [height, width]."""
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
        if not match:
            raise ValueError(f"crop must look like 640x480 (width x height), got {value!r}")
        return (int(match.group(2)), int(match.group(1)))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    raise ValueError(f"crop must be an int, 'WxH' or [height, width], got {value!r}")


def _registered_model(name: str) -> str:
    if name not in list_models():
        raise ValueError(f"unknown model {name!r}; this synthdet has {list_models()}")
    return name


#: A name in the model registry: run configs and checkpoints check it alike.
ModelName = Annotated[str, AfterValidator(_registered_model)]


#: Crop size stored as (height, width); written back as "WxH".
CropSize = Annotated[
    tuple[int, int],
    BeforeValidator(_parse_crop),
    PlainSerializer(lambda hw: f"{hw[1]}x{hw[0]}", return_type=str),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Strict):
    """One image source: a folder (one label, or class subfolders) or a CSV manifest."""

    name: str | None = Field(None, description="shown in per-source tables; default: folder or file name")
    path: Path | None = Field(None, description="folder searched recursively for images")
    manifest: Path | None = Field(None, description="CSV with columns path,label[,source][,split][,group]")
    shards: str | None = Field(
        None, description="WebDataset tar shards with their index: a folder or URL holding index.json, the index "
                          "file, or a pattern such as pool-{000000..000015}.tar (splits come from the index)"
    )
    label: Literal["real", "synthetic"] | None = Field(
        None, description="label of every image; omit to read it from class subfolders or the manifest"
    )
    split: Literal["auto", "train", "val", "test"] = Field(
        "auto", description="auto: split folders if any (see split_folders), else hashed into train/val/test; "
        "otherwise the whole source goes to that split"
    )
    split_folders: Literal["auto", "use", "ignore"] = Field(
        "auto", description="a folder's own train/ val/ test/ subfolders (CIFAKE, CNNDetection, GenImage) as its "
        "splits, val carved from train by hash when there is none; auto: when present, use: required, ignore: hash"
    )
    group_by: Literal["file", "folder", "name"] = Field(
        "file", description="folder: images of one folder (in a manifest: of the group or path column) stay in one "
                            "split (video frames, sequences, renders of one prompt); name: images with one file "
                            "name stay in one split (prompt-matched sets: a folder per generator, a file per prompt)"
    )
    select: list[str] | None = Field(None, description="manifest only: keep just these sub-sources")
    max_images: int | None = Field(None, gt=0, description="seeded random subset of at most this many images")
    source_column: str = Field("source", description="manifest column that names sub-sources")

    @model_validator(mode="after")
    def _one_location(self) -> "SourceConfig":
        if sum(x is not None for x in (self.path, self.manifest, self.shards)) != 1:
            raise ValueError("give exactly one of 'path' (a folder), 'manifest' (a CSV file) or 'shards' (tar shards)")
        if self.split_folders == "use" and (self.path is None or self.split != "auto"):
            raise ValueError("split_folders: use needs a folder source ('path') with split: auto")
        return self

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.path is not None:
            return self.path.name
        if self.manifest is not None:
            return self.manifest.stem
        folder = self.shards.rstrip("/")  # the folder that holds the shards and their index
        if folder.endswith((".tar", ".json")):
            folder = folder.rsplit("/", 1)[0]
        return folder.rsplit("/", 1)[-1]


class SplitFractions(_Strict):
    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitFractions":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class ViewConfig(_Strict):
    """How an image becomes model inputs for validation, testing and prediction.

    ``crop``: one center crop at native pixels (small images reflect-padded); ``resize``:
    the whole image resized (shorter side to the crop, bicubic) and center-cropped, as
    CLIP was trained; ``tiles``: up to ``tiles`` native-pixel crops spread over the image,
    their logits averaged. Resizing erases high-frequency traces, so it is a choice to
    measure, not a default. Training of end-to-end models always uses random crops.
    """

    mode: Literal["crop", "resize", "tiles"] = "crop"
    tiles: int = Field(5, ge=1, le=64, description="tiles mode: most crops per image")


class DataConfig(_Strict):
    sources: list[SourceConfig] = Field(default_factory=list)
    splits: SplitFractions = Field(default_factory=SplitFractions)
    crop: CropSize = Field((224, 224), description="model input size: int, 'WxH' or [height, width]")
    view: ViewConfig | None = Field(
        None, description="stored in the checkpoint as its default view; none: center crop to evaluate, tiles to predict"
    )
    balance: bool = Field(True, description="sample training images so both classes are seen equally often")
    workers: int = Field(-1, ge=-1, description="decoding worker processes; -1 = one per CPU core")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="larger JPEGs are decoded at reduced scale, others refused")


class FeatureConfig(_Strict):
    representations: list[str] = Field(default_factory=lambda: ["fft_mag"], min_length=1)
    highpass_radius: float = Field(0.0, ge=0, description="zero spectrum bins within this radius of DC (0 = off)")
    grayscale: bool = Field(False, description="compute representations on luminance (1 channel each)")

    @field_validator("representations")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in REPRESENTATIONS]
        if unknown:
            raise ValueError(f"unknown representation(s) {unknown}; available: {sorted(REPRESENTATIONS)}")
        return names


class ModelConfig(_Strict):
    name: ModelName = "resnet18"
    pretrained: str | None = Field(
        None, description="weights key (synthdet weights list) or a local file: .safetensors, .pth state dict, "
                          "TorchScript .pt, or a synthdet checkpoint"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="extra constructor arguments")


class _RandomOp(_Strict):
    _range_field: ClassVar[str]
    p: float = Field(0.0, ge=0, le=1, description="probability of applying it to a training crop")

    @model_validator(mode="after")
    def _ordered_range(self):
        low, high = getattr(self, self._range_field)
        if low > high:
            raise ValueError(f"{self._range_field} must be [low, high], got [{low}, {high}]")
        return self


class JpegAugment(_RandomOp):
    _range_field: ClassVar[str] = "quality"
    quality: tuple[int, int] = Field((60, 95), description="JPEG quality range")

    @field_validator("quality")
    @classmethod
    def _valid_quality(cls, q):
        if not all(1 <= v <= 100 for v in q):
            raise ValueError("JPEG quality must be within 1..100")
        return q


class BlurAugment(_RandomOp):
    _range_field: ClassVar[str] = "sigma"
    sigma: tuple[float, float] = Field((0.1, 2.0), description="Gaussian blur sigma range, pixels")


class NoiseAugment(_RandomOp):
    _range_field: ClassVar[str] = "sigma"
    sigma: tuple[float, float] = Field((0.0, 0.03), description="Gaussian noise sigma range, [0, 1] units")


class ResizeAugment(_RandomOp):
    _range_field: ClassVar[str] = "scale"
    scale: tuple[float, float] = Field((0.5, 1.5), description="rescale factor range")

    @field_validator("scale")
    @classmethod
    def _positive(cls, scale):
        if min(scale) <= 0:
            raise ValueError("scale factors must be > 0")
        return scale


class AugmentConfig(_Strict):
    """Training-time augmentation; every operation is off unless its ``p`` > 0 (flips aside)."""

    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.0, ge=0, le=1, description="probability of a vertical flip")
    jpeg: JpegAugment = Field(default_factory=JpegAugment)
    blur: BlurAugment = Field(default_factory=BlurAugment)
    noise: NoiseAugment = Field(default_factory=NoiseAugment)
    resize: ResizeAugment = Field(default_factory=ResizeAugment)
    copies: int = Field(
        0, ge=0, le=16, description="frozen-embedding probes: augmented copies embedded per training image"
    )
    clean: bool = Field(
        True, description="frozen-embedding probes: train on each image's undegraded view too (false: on the "
                          "degraded copies only, so no class is ever seen in a format the other never has)"
    )
    region: Literal["center", "anywhere"] = Field(
        "center", description="frozen-embedding probes: where an augmented copy's crop is taken (anywhere: a seeded "
                              "random position, so the head learns the edges, sky and blur that tiles show)"
    )

    @model_validator(mode="after")
    def _something_to_train_on(self) -> "AugmentConfig":
        if not self.clean and self.copies == 0:
            raise ValueError("augment.clean: false trains on the degraded copies only, so augment.copies must be >= 1")
        return self


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up length (fractions allowed)")
    lr_decay: float = Field(0.9, gt=0, le=1, description="learning rate factor per epoch after warm-up")
    select_metric: Literal["accuracy", "auc", "loss"] = Field(
        "accuracy", description="validation metric that picks the best checkpoint"
    )
    threshold: float = Field(0.5, gt=0, lt=1, description="decision threshold on calibrated P(synthetic)")
    target_fpr: float | None = Field(
        None, gt=0, lt=1, description="instead of threshold: choose it on validation for this false-positive rate"
    )
    norm_batches: int = Field(8, ge=1, description="training batches used to measure normalization stats")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap batches per epoch (smoke runs)")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps")
    amp: bool = Field(True, description="mixed precision (bfloat16) when on a GPU")


class OneClassConfig(_Strict):
    """Stage 2 of a one-class model (deep_svdd / flow_svdd), trained on real images only."""

    nu: float = Field(0.05, gt=0, le=1, description="fraction of real training images allowed outside the sphere")
    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-6, ge=0)
    radius_every: int = Field(1, ge=1, description="update R to the (1 - nu) distance quantile every k epochs")


class Config(_Strict):
    name: str = "run"
    seed: int = 0
    output_dir: Path = Path("runs")
    data: DataConfig = Field(default_factory=DataConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    one_class: OneClassConfig = Field(default_factory=OneClassConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults), apply ``key=value`` overrides, validate."""
    raw: dict[str, Any] = {}
    base_dir = Path.cwd()
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        base_dir = path.resolve().parent
    for item in overrides or []:
        apply_override(raw, item)
    config = config_from_dict(raw, source=str(path) if path else "config")
    return resolve_paths(config, base_dir)


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid configuration\n" + _explain(exc)) from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in a nested dict; the value is parsed as YAML (3, 1e-4, [a, b], true)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value, e.g. train.epochs=3")
    key, _, text = item.partition("=")
    value = yaml.safe_load(text) if text.strip() else None
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[parts[-1]] = value


def resolve_paths(config: Config, base_dir: Path) -> Config:
    """Make source, manifest, shard and pretrained paths absolute relative to ``base_dir`` (not URLs, weights keys)."""

    def absolute(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base_dir / p)).resolve()

    for source in config.data.sources:
        source.path = absolute(source.path)
        source.manifest = absolute(source.manifest)
        if source.shards is not None and not is_url(source.shards):
            source.shards = str(absolute(Path(source.shards)))
    if config.model.pretrained is not None and config.model.pretrained not in KNOWN_WEIGHTS:
        config.model.pretrained = str(absolute(Path(config.model.pretrained)))
    return config


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent_fields = _fields_at(err["loc"][:-1])
            hint = difflib.get_close_matches(str(err["loc"][-1]), parent_fields, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            lines.append(f"  {loc}: unknown key{suggestion}")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            lines.append(f"  {loc}: {err['msg']}{shown}")
    return "\n".join(lines)


def _fields_at(loc: tuple) -> list[str]:
    """Field names of the config model at a validation-error location."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        annotation = field.annotation
        inner = getattr(annotation, "__args__", None)
        model = inner[0] if inner and isinstance(inner[0], type) else annotation
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
