import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import AWKWARD_FILES
from synthdet.data import decode
from synthdet.data.decode import ImageDecodeError, check_image, load_image
from synthdet.data.transforms import center_crop, pad_to_size, random_crop


@pytest.mark.parametrize("name", sorted(AWKWARD_FILES))
def test_awkward_files_decode_or_fail_with_the_documented_reason(awkward_folder, name):
    expected_error = AWKWARD_FILES[name]
    path = awkward_folder / name
    if expected_error is None:
        decoded = load_image(path)
        assert decoded.pixels.dtype == np.uint8 and decoded.pixels.ndim == 3 and decoded.pixels.shape[2] == 3
    else:
        with pytest.raises(ImageDecodeError) as info:
            load_image(path)
        assert info.value.path == str(path)
        assert expected_error in info.value.reason
        assert str(path) in str(info.value)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "x.png")
    pixels = load_image(tmp_path / "x.png").pixels
    assert pixels[0, :, 0].tolist() == [0, 3, 128, 255]  # Pillow's convert("RGB") would give 255 for 1000


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").pixels.shape == (40, 20, 3)


def test_palette_transparency_and_cmyk_become_rgb(awkward_folder):
    assert load_image(awkward_folder / "palette_alpha.png").pixels.shape == (120, 160, 3)
    cmyk = load_image(awkward_folder / "cmyk.jpg").pixels
    assert cmyk.shape == (120, 160, 3) and cmyk.std() > 10


def test_huge_jpeg_is_decoded_at_reduced_scale_and_says_so(tmp_path):
    Image.new("RGB", (800, 600), "gray").save(tmp_path / "big.jpg")
    decoded = load_image(tmp_path / "big.jpg", max_pixels=200_000)
    assert decoded.reduced_by == 2 and decoded.pixels.shape == (300, 400, 3)
    assert decoded.original_size == (800, 600)


def test_huge_non_jpeg_is_refused_with_the_limit(tmp_path):
    Image.new("RGB", (800, 600), "gray").save(tmp_path / "big.png")
    with pytest.raises(ImageDecodeError, match="too large: 800x600 exceeds the 200,000-pixel limit"):
        load_image(tmp_path / "big.png", max_pixels=200_000)


def test_missing_file_is_named():
    with pytest.raises(ImageDecodeError, match="nope.jpg: cannot read file"):
        load_image("nope.jpg")


def test_small_images_are_padded_never_resampled():
    rng = np.random.default_rng(0)
    tiny = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    padded = pad_to_size(tiny, 96, 128)
    assert padded.shape == (96, 128, 3)
    assert np.array_equal(padded[32:64, 48:80], tiny)  # original pixels untouched, centred
    for crop in (center_crop(tiny, 64, 64), random_crop(tiny, 64, 64)):
        assert crop.shape == (64, 64, 3)
    assert pad_to_size(tiny, 16, 16) is tiny


def test_crops_of_large_images_keep_native_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)
    crop = center_crop(image, 50, 60)
    assert np.array_equal(crop, image[25:75, 45:105])


def test_jpegs_under_the_pixel_limit_are_decoded_exactly_as_pillow_decodes_them(tmp_path):
    """Reduced (draft) decoding would change what the model sees, so it is only for oversized files."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(tmp_path / "x.jpg", quality=90)
    decoded = load_image(tmp_path / "x.jpg")
    assert decoded.reduced_by == 1
    assert np.array_equal(decoded.pixels, np.asarray(Image.open(tmp_path / "x.jpg").convert("RGB")))
    draft = Image.open(tmp_path / "x.jpg")
    draft.draft("RGB", (320, 240))  # what reduced decoding would give at 1/2 scale
    halved = np.asarray(Image.fromarray(decoded.pixels).reduce(2), dtype=float)
    assert np.abs(np.asarray(draft.convert("RGB"), dtype=float) - halved).mean() > 1.0  # not the same pixels


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_as_pillow_does(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).save(tmp_path / "o.png", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")).convert("RGB"))
    assert np.array_equal(load_image(tmp_path / "o.png").pixels, expected)


@pytest.mark.parametrize("mode", ["CMYK", "P", "LA", "1", "I;16", "I", "F"])
def test_conversion_a_strip_at_a_time_gives_the_whole_image_result(monkeypatch, mode):
    """Strips bound memory; 16-bit and float scales still come from the whole image."""
    rng = np.random.default_rng(0)
    if mode in ("I;16", "I", "F"):  # top rows alone would pick another scale than the whole image
        ramp = rng.random((40, 30)) * np.linspace(0.001, 1, 40)[:, None]
        scale, dtype = {"I;16": (65535, np.uint16), "I": (2**24, np.int32), "F": (2.0, np.float32)}[mode]
        image = Image.fromarray((ramp * scale).astype(dtype))
    else:
        image = Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).convert(mode)
    whole = decode.to_rgb_array(image)
    monkeypatch.setattr(decode, "STRIP_PIXELS", 30 * 3)  # 3 rows per strip
    assert np.array_equal(decode.to_rgb_array(image), whole)


def test_the_budget_holds_for_the_size_actually_decoded(tmp_path):
    Image.new("RGB", (800, 600), "gray").save(tmp_path / "big.jpg")
    with pytest.raises(ImageDecodeError, match="exceeds the 5,000-pixel limit .even at 1/8 scale"):
        load_image(tmp_path / "big.jpg", max_pixels=5_000)  # 1/8 is still 100x75
    Image.new("RGB", (800, 600), "gray").save(tmp_path / "progressive.jpg", progressive=True)
    with pytest.raises(ImageDecodeError, match="progressive JPEG"):  # coefficients of the full image
        load_image(tmp_path / "progressive.jpg", max_pixels=800 * 600)
    assert load_image(tmp_path / "progressive.jpg", max_pixels=2 * 800 * 600).reduced_by == 1


def test_a_jpeg_too_short_for_its_size_is_corrupt_even_if_pillow_would_fill_it(tmp_path, monkeypatch):
    from PIL import ImageFile

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (2000, 2000, 3), dtype=np.uint8)).save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:3000])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # Pillow would paint the rest grey
    with pytest.raises(ImageDecodeError, match="3,000 bytes cannot hold a 2000x2000 JPEG"):
        load_image(tmp_path / "cut.jpg")
    assert load_image(tmp_path / "full.jpg").pixels.shape == (2000, 2000, 3)


def test_the_header_check_refuses_what_decoding_would_refuse_from_the_header(awkward_folder, tmp_path):
    Image.new("1", (12000, 12000)).save(tmp_path / "bomb.png")
    for path, phrase in ((tmp_path / "bomb.png", "too large"), (awkward_folder / "text.jpg", "not an image"),
                         (awkward_folder / "empty.jpg", "empty file")):
        with pytest.raises(ImageDecodeError, match=phrase):
            check_image(path)
    assert check_image(awkward_folder / "truncated.jpg") == (160, 120)  # damage past the header needs decoding
