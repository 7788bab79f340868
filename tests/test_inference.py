"""Tiling, aggregation, uncertainty, heatmaps, video and ONNX export."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import synthdet
from synthdet.checkpoint import CheckpointMeta, ModelSpec, Normalization
from synthdet.config import FeatureConfig
from synthdet.data.toy import toy_image
from synthdet.data.transforms import pad_to_size
from synthdet.inference.detector import Detector, PredictOptions
from synthdet.inference.heatmap import LEGEND_HEIGHT, heatmap_image, interpolate_views
from synthdet.inference.tiles import TileTransform, coverage, plan_tiles
from synthdet.inference.video import iter_frames, predict_video, smooth


@pytest.mark.parametrize("crop", [(224, 224), (256, 256), (480, 640)])
def test_tiles_cover_every_pixel_of_a_full_hd_image(crop):
    image = np.zeros((1080, 1920, 3), np.uint8)
    tiles, boxes = TileTransform(crop)(image)
    assert tiles.shape[1:] == (*crop, 3) and len(tiles) <= 64
    covered = np.zeros((1080, 1920), bool)
    for top, left, h, w in boxes:
        covered[top : top + h, left : left + w] = True
    assert covered.all()


def test_tiles_overlap_when_the_budget_allows_and_thin_out_for_huge_images():
    corners = plan_tiles(1080, 1920, (256, 256), overlap=0.25, max_tiles=64)
    lefts = sorted({left for _, left in corners})
    assert all(b - a <= 256 * 0.75 + 1 for a, b in zip(lefts, lefts[1:]))  # at least 25% overlap
    huge = plan_tiles(20000, 30000, (256, 256), max_tiles=64)
    assert 1 <= len(huge) <= 64
    assert coverage(2000, 3000, (256, 256), plan_tiles(2000, 3000, (256, 256), max_tiles=16)) < 1.0


@pytest.mark.parametrize("shape", [(1, 5_000_000), (5_000_000, 1), (3, 4000), (90_000, 1), (300, 30_000)])
def test_the_tile_cap_holds_for_any_shape(shape):
    assert 1 <= len(plan_tiles(max(shape[0], 64), max(shape[1], 64), (64, 64), max_tiles=64)) <= 64
    assert len(plan_tiles(max(shape[0], 64), max(shape[1], 64), (64, 64), max_tiles=3)) <= 3


@pytest.mark.parametrize("shape", [(10, 300), (300, 2), (1, 200), (40, 40), (100, 130)])
def test_tiles_cut_before_padding_hold_the_pixels_of_the_padded_image(shape):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    tiles, boxes = TileTransform((64, 64), max_tiles=8)(image)
    padded = pad_to_size(image, 64, 64)  # what tiles were cut from before
    corners = plan_tiles(padded.shape[0], padded.shape[1], (64, 64), 0.25, 8)
    assert np.array_equal(tiles, np.stack([padded[t : t + 64, l : l + 64] for t, l in corners]))


def test_the_tiles_of_one_image_stay_within_the_pixel_budget():
    det = fake_detector()
    assert det.view_transform(PredictOptions(max_tiles=64, max_pixels=3 * 64 * 64)).max_tiles == 3


def test_small_images_are_one_padded_tile():
    tiles, boxes = TileTransform((64, 64))(np.zeros((32, 32, 3), np.uint8))
    assert tiles.shape == (1, 64, 64, 3) and boxes == [(0, 0, 32, 32)]


class BrightnessNet(torch.nn.Module):
    """Logit of 'synthetic' rises with the mean brightness of the left half of each view."""

    def forward(self, images):
        left = images[..., : images.shape[-1] // 2].float().mean(dim=(1, 2, 3))
        z = (left - 127.5) / 10
        return torch.stack([torch.zeros_like(z), z], dim=1)


def fake_detector(crop=(64, 64)) -> Detector:
    meta = CheckpointMeta(model=ModelSpec(name="resnet18", in_chans=3), features=FeatureConfig(representations=["rgb"]),
                          crop=crop, normalization=Normalization(mean=[0, 0, 0], std=[1, 1, 1]))
    return Detector(BrightnessNet(), meta, torch.device("cpu"))


def test_uniform_images_give_agreeing_tiles_and_confident_verdicts():
    det = fake_detector()
    white = Image.fromarray(np.full((128, 256, 3), 255, np.uint8))
    p = det.predict(white)[0]
    assert p.label == "synthetic" and p.prob_synthetic > 0.99 and p.n_tiles > 1
    assert p.tile_spread < 1e-6 and p.uncertain is False and p.image_size == (128, 256)


def test_a_half_and_half_image_is_flagged_uncertain_by_its_tile_spread():
    det = fake_detector()
    pixels = np.zeros((128, 512, 3), np.uint8)
    pixels[:, 256:] = 255
    p = det.predict(Image.fromarray(pixels), keep_tiles=True)[0]
    assert p.tile_spread > 0.3 and p.uncertain is True
    vote = det.predict(Image.fromarray(pixels), aggregate="vote")[0]
    assert 0.3 < vote.prob_synthetic < 0.7  # share of tiles voting synthetic
    assert {round(t["prob_synthetic"]) for t in p.tiles} == {0, 1}
    heat = heatmap_image(pixels, p)
    assert heat.size == (512, 128 + LEGEND_HEIGHT)  # the image's aspect, at its own size when within bounds
    assert heatmap_image(pixels[:64, :128], det.predict(Image.fromarray(pixels[:64, :128]), keep_tiles=True)[0]).size \
        == (384, 192 + LEGEND_HEIGHT)  # small images are enlarged, keeping the aspect
    left, right = np.asarray(heat)[64, 40].astype(int), np.asarray(heat)[64, 470].astype(int)
    assert left[2] > left[0] and right[0] > right[2]  # blue over the dark (real) half, red over the bright one


def test_a_one_crop_heatmap_colours_only_the_crop_it_scored():
    """The default detector's view is one center crop: the map shows where it looked, not a guess elsewhere."""
    det = fake_detector()
    pixels = np.full((200, 400, 3), 255, np.uint8)  # bright: the brightness model says synthetic
    p = det.predict(Image.fromarray(pixels), tiles=False, keep_tiles=True)[0]
    crop_h, crop_w = det.crop
    assert p.n_tiles == 1 and p.tiles == [{"top": (200 - crop_h) // 2, "left": (400 - crop_w) // 2, "height": crop_h,
                                          "width": crop_w, "prob_synthetic": pytest.approx(p.prob_synthetic)}]
    heat = np.asarray(heatmap_image(pixels, p)).astype(int)
    assert heat[100, 200, 0] > heat[100, 200, 2]  # red inside the crop
    assert (heat[5, 5] == 255).all()  # the rest of the image untouched
    assert det.predict(Image.fromarray(pixels[:20, :30]), tiles=False, keep_tiles=True)[0].tiles[0]["height"] == 20


def test_view_probabilities_cover_the_whole_map():
    centres = np.array([[10.0, 10.0], [10.0, 30.0], [30.0, 10.0], [30.0, 30.0]])
    field = interpolate_views((41, 41), centres, np.array([0.0, 1.0, 0.0, 1.0]))
    assert not np.isnan(field).any()
    assert field[20, 20] == pytest.approx(0.5) and field[20, 10] == pytest.approx(0.0)
    assert field[0, 40] == pytest.approx(1.0) and field[40, 0] == pytest.approx(0.0)  # edges continue the grid
    line = interpolate_views((5, 41), np.array([[2.0, 0.0], [2.0, 40.0]]), np.array([0.2, 0.6]))
    assert line[0, 20] == pytest.approx(0.4) and line[4, 40] == pytest.approx(0.6)  # one row of views
    assert np.all(interpolate_views((3, 3), np.array([[1.0, 1.0]]), np.array([0.7])) == 0.7)


def test_mirroring_reveals_a_left_right_dependent_model():
    det = fake_detector()
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, :32] = 255  # bright left half: mirrored, it is dark
    p = det.predict(Image.fromarray(pixels), tta=True)[0]
    assert p.flip_spread > 0.9 and p.uncertain is True
    assert det.predict(Image.fromarray(pixels))[0].flip_spread is None


def test_probabilities_near_the_threshold_are_uncertain():
    det = fake_detector()
    grey = Image.fromarray(np.full((64, 64, 3), 128, np.uint8))
    p = det.predict(grey, uncertainty_band=0.1)[0]
    assert abs(p.prob_synthetic - 0.5) < 0.1 and p.uncertain is True


@pytest.mark.slow
def test_heatmap_of_a_full_hd_image_keeps_its_aspect(checkpoint, tmp_path):
    det = synthdet.load(checkpoint)
    pixels = toy_image(np.random.default_rng(0), "terrain", True, 1080, 1920)
    p = det.predict(Image.fromarray(pixels), keep_tiles=True, max_tiles=600)[0]
    image = heatmap_image(pixels, p)
    assert image.size == (1024, 576 + LEGEND_HEIGHT)
    assert abs(image.size[0] / (image.size[1] - LEGEND_HEIGHT) - 1920 / 1080) < 0.01


def make_clip(path: Path, pattern: str, fps: int = 10) -> None:
    """A lossless clip of toy frames: 's' = clean render, 'r' = simulated camera,
    'b' = bright (the brightness net's synthetic), 'd' = dark (its real)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 192, 144, "bgr0"
        for i, kind in enumerate(pattern):
            if kind in "bd":
                pixels = np.full((144, 192, 3), 200 if kind == "b" else 60, np.uint8)
            else:
                pixels = toy_image(np.random.default_rng(i), "shapes", kind == "r", 144, 192)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_verdict_is_stable_where_frame_scores_alternate(tmp_path):
    """Frame scores are known (the brightness net: bright frames synthetic, dark ones real), so
    the smoothing is tested on any CPU, through the same decode and scoring path as a real model."""
    clip = tmp_path / "clip.mkv"
    make_clip(clip, "bdb" * 10)
    result = predict_video(fake_detector(), clip, fps=None, window=5)
    raw = [f.label for f in result.frames]
    smoothed = [f.smoothed_label for f in result.frames]
    assert len(result.frames) == 30
    assert raw == ["synthetic", "real", "synthetic"] * 10  # per-frame verdicts flip on every dark frame
    assert [f.smoothed_prob for f in result.frames] == pytest.approx(
        smooth([f.prob_synthetic for f in result.frames], 5, "mean", 0.5))
    assert set(smoothed) == {"synthetic"}  # the smoothed verdict does not
    assert result.label == "synthetic" and result.fraction_synthetic == 1.0
    csv_text = result.write_csv(tmp_path / "frames.csv").read_text()
    assert csv_text.count("\n") == 31 and "smoothed_prob" in csv_text


def test_frame_sampling_by_fps_and_every(tmp_path):
    clip = tmp_path / "clip.mkv"
    make_clip(clip, "s" * 20, fps=10)
    assert [i for i, _, _ in iter_frames(clip, fps=2)] == [0, 5, 10, 15]
    assert [i for i, _, _ in iter_frames(clip, every=7)] == [0, 7, 14]


def test_smoothing_methods():
    probs = [0.9, 0.1, 0.9, 0.9, 0.1, 0.9]
    assert all(v > 0.5 for v in smooth(probs, 3, "mean", 0.5)[1:-1])
    assert smooth(probs, 3, "majority", 0.5)[1] == pytest.approx(2 / 3)


@pytest.mark.slow
def test_onnx_export_matches_torch_probabilities(checkpoint, toy_sources, tmp_path):
    from synthdet.inference.onnx_export import export_onnx

    onnx_path, logit_difference = export_onnx(checkpoint, tmp_path / "model.onnx")
    assert logit_difference < 1e-3
    images = sorted(Path(toy_sources[0]["path"]).glob("*.jpg"))[:6] + sorted(Path(toy_sources[2]["path"]).glob("*.jpg"))[:6]
    torch_probs = [p.prob_synthetic for p in synthdet.load(checkpoint).predict(images, workers=0)]
    onnx_detector = synthdet.load(onnx_path)
    assert onnx_detector.meta == synthdet.load(checkpoint).meta  # metadata travels inside the file
    onnx_probs = [p.prob_synthetic for p in onnx_detector.predict(images, workers=0)]
    assert np.max(np.abs(np.array(torch_probs) - np.array(onnx_probs))) < 1e-4
