"""A corpus of malformed and awkward inputs, generated at test time (nothing binary is stored).

``IMAGES`` maps each file written by :func:`write_images` to what must happen to it:
``None`` = scored, otherwise a phrase of the error reason. ``VIDEOS`` does the same for
:func:`write_videos`. ``IGNORED`` is what a folder scan must count and pass over.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

#: Files that must be scored (None) or refused with a reason containing the phrase.
IMAGES = {
    "photo.jpg": None,
    "photo.png": None,
    "flat_2000.png": None,  # a large flat colour image: legitimately tiny on disk
    "flat_16.jpg": None,
    "flat_progressive.jpg": None,
    "thin_3x4000.png": None,  # galleries used to crash on these two
    "thin_90000x1.png": None,
    "line_1x5000000.png": None,  # made 2,236 tiles with a 64-tile cap
    "camera_24mp.jpg": None,  # over the budget: decoded at reduced scale, with a note
    "bomb_65000.jpg": "corrupt or truncated",  # 7 kB claiming 65000x65000, then zeros: grey filler
    "filler_4000x3000.jpg": "corrupt or truncated",
    "bomb_progressive.jpg": "too large",  # a progressive JPEG holds all coefficients at any scale
    "bomb_1bit.png": "too large",
    "corrupt.png": "corrupt PNG file",
    "truncated.jpg": "truncated",
    "empty.jpg": "empty file",
    "text.jpg": "not an image",
}
#: Passed over by folder scans: two hidden (a file and a folder), two with other extensions.
IGNORED = {".hidden.jpg": "hidden", ".cache": "hidden", "notes.txt": "other", "photo.jpg.bak": "other"}
VIDEOS = {
    "audio_only.mp4": "no video stream",
    "not_a_video.mp4": "cannot open video",
    "corrupt_mid.mkv": None,  # scored on the frames before the damage, with a note
    "clip.mkv": None,
}


def jpeg_claiming(width: int, height: int, body: bytes, progressive: bool = False) -> bytes:
    """A real JPEG header whose frame says ``width`` x ``height``, followed by ``body`` and an end marker."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "gray").save(buffer, "JPEG", progressive=progressive)
    data = bytearray(buffer.getvalue())
    frame = data.find(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[frame + 5 : frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    scan = data.find(b"\xff\xda")
    header_end = scan + 2 + int.from_bytes(data[scan + 2 : scan + 4], "big")
    return bytes(data[:header_end]) + body + b"\xff\xd9"


def write_images(folder: Path) -> Path:
    """Every file of ``IMAGES`` and ``IGNORED`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    photo.save(folder / "photo.jpg", quality=90)
    photo.save(folder / "photo.png")
    Image.new("RGB", (2000, 2000), (30, 140, 60)).save(folder / "flat_2000.png")
    Image.new("RGB", (16, 16), (200, 20, 20)).save(folder / "flat_16.jpg")
    Image.new("RGB", (1024, 1024), (90, 90, 200)).save(folder / "flat_progressive.jpg", progressive=True,
                                                       optimize=True)
    Image.fromarray(rng.integers(0, 256, (4000, 3, 3), dtype=np.uint8)).save(folder / "thin_3x4000.png")
    Image.fromarray(rng.integers(0, 256, (1, 90000, 3), dtype=np.uint8)).save(folder / "thin_90000x1.png")
    Image.new("L", (5_000_000, 1), 128).save(folder / "line_1x5000000.png")
    Image.new("RGB", (6000, 4000), (120, 110, 100)).save(folder / "camera_24mp.jpg", quality=90)
    (folder / "bomb_65000.jpg").write_bytes(jpeg_claiming(65000, 65000, bytes(7000)))
    (folder / "filler_4000x3000.jpg").write_bytes(jpeg_claiming(4000, 3000, bytes(7000)))
    Image.new("RGB", (4000, 3000), (10, 10, 10)).save(folder / "bomb_progressive.jpg", progressive=True)
    Image.new("1", (12000, 12000)).save(folder / "bomb_1bit.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    full = io.BytesIO()
    photo.save(full, "JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image\n")
    photo.save(folder / ".hidden.jpg")
    (folder / ".cache").mkdir(exist_ok=True)
    photo.save(folder / ".cache" / "thumb.jpg")
    (folder / "notes.txt").write_text("not an image either\n")
    (folder / "photo.jpg.bak").write_bytes(full.getvalue())
    return folder


def write_clip(path: Path, frames: int = 12) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "bgr0"
        for i in range(frames):
            pixels = np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_videos(folder: Path) -> Path:
    """Every file of ``VIDEOS`` into ``folder``."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    write_clip(folder / "clip.mkv")
    write_clip(folder / "corrupt_mid.mkv", frames=20)
    data = bytearray((folder / "corrupt_mid.mkv").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 3000] = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    (folder / "corrupt_mid.mkv").write_bytes(bytes(data))
    with av.open(str(folder / "audio_only.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        stream.layout = "mono"
        for i in range(5):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    (folder / "not_a_video.mp4").write_text("an mp4 in name only\n")
    return folder
