"""Provenance beside pixels: what files declare (C2PA, IPTC, generator settings, EXIF), what each is
worth, the combined verdict, and malformed metadata that is reported instead of crashing."""

from __future__ import annotations

import csv
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from synthdet.provenance import (
    DECLARES_SYNTHETIC,
    ERROR,
    INFORMATIVE,
    MAX_SEGMENT_BYTES,
    combine,
    read_provenance,
)


def pixels(seed: int = 0, shape=(96, 128)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def png_with_text(path: Path, **chunks: str) -> Path:
    info = PngImagePlugin.PngInfo()
    for keyword, text in chunks.items():
        info.add_text(keyword, text)
    Image.fromarray(pixels()).save(path, pnginfo=info)
    return path


def jpeg_bytes(**save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels()).save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def with_segment(jpeg: bytes, marker: int, payload: bytes) -> bytes:
    """``jpeg`` with one more segment right after its start-of-image marker."""
    return jpeg[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def xmp_packet(source_type: str, as_attribute: bool = False) -> bytes:
    uri = f"http://cv.iptc.org/newscodes/digitalsourcetype/{source_type}"
    body = (f'<rdf:Description rdf:about="" Iptc4xmpExt:DigitalSourceType="{uri}"/>' if as_attribute else
            f'<rdf:Description rdf:about=""><Iptc4xmpExt:DigitalSourceType>{uri}</Iptc4xmpExt:DigitalSourceType>'
            f'</rdf:Description>')
    return (b"http://ns.adobe.com/xap/1.0/\x00" + (
        '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
        f'{body}</rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode())


def kinds(found) -> dict[str, str]:
    return {e.kind: e.strength for e in found.evidence}


A1111 = ("a photo of a lighthouse at dusk\nNegative prompt: blurry\nSteps: 30, Sampler: DPM++ 2M Karras, "
         "CFG scale: 7, Seed: 1234, Size: 1024x1024, Model: sd_xl_base_1.0")


def test_automatic1111_parameters_declare_a_generator(tmp_path):
    found = read_provenance(png_with_text(tmp_path / "a1111.png", parameters=A1111))
    assert kinds(found) == {"generator_settings": DECLARES_SYNTHETIC}
    assert found.evidence[0].value == "AUTOMATIC1111/Forge" and found.declared == "synthetic"


def test_a_comfyui_workflow_declares_a_generator(tmp_path):
    prompt = {"3": {"class_type": "KSampler", "inputs": {"seed": 1}}, "4": {"class_type": "CheckpointLoaderSimple"}}
    workflow = {"nodes": [{"id": 3, "type": "KSampler"}], "links": []}
    found = read_provenance(png_with_text(tmp_path / "comfy.png", prompt=json.dumps(prompt),
                                          workflow=json.dumps(workflow)))
    assert {e.value for e in found.evidence} == {"ComfyUI"} and found.declared == "synthetic"


def test_words_are_not_structures(tmp_path):
    """A caption that names a generator, a 'parameters' chunk that is prose: reported or ignored, never a claim."""
    found = read_provenance(png_with_text(tmp_path / "caption.png", Description="Made with OpenAI DALL-E and Midjourney",
                                          parameters="Steps: to the lighthouse were steep", prompt="a cat"))
    assert found.declared is None
    assert all(e.strength == INFORMATIVE for e in found.evidence)


@pytest.mark.parametrize("as_attribute", [False, True])
def test_xmp_trained_algorithmic_media_declares_synthetic(tmp_path, as_attribute):
    data = with_segment(jpeg_bytes(), 0xE1, xmp_packet("trainedAlgorithmicMedia", as_attribute))
    found = read_provenance(data)
    assert kinds(found) == {"iptc_source_type": DECLARES_SYNTHETIC}
    assert found.evidence[0].value == "trainedAlgorithmicMedia"
    capture = read_provenance(with_segment(jpeg_bytes(), 0xE1, xmp_packet("digitalCapture")))
    assert capture.declared is None and kinds(capture) == {"iptc_source_type": INFORMATIVE}  # unsigned: not proof


def test_camera_exif_alone_is_reported_but_never_makes_an_image_real(tmp_path):
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "Canon", "EOS R5", "Firmware 1.8"
    exif.get_ifd(0x8769)[0x9003] = "2025:06:01 12:00:00"
    path = tmp_path / "camera.jpg"
    path.write_bytes(jpeg_bytes(exif=exif.tobytes()))
    found = read_provenance(path)
    camera = next(e for e in found.evidence if e.kind == "camera_exif")
    assert camera.value == "Canon EOS R5" and camera.strength == INFORMATIVE
    assert camera.detail["DateTimeOriginal"] == "2025:06:01 12:00:00"
    assert found.declared is None
    assert combine("synthetic", found) == ("synthetic", "pixels")  # the pixels decide
    assert combine("real", found) == ("real", "pixels")


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_exif_is_found_in_other_containers(fmt):
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "SONY", "ILCE-7M4"
    buffer = io.BytesIO()
    Image.fromarray(pixels()).save(buffer, fmt, exif=exif.tobytes())
    (camera,) = read_provenance(buffer.getvalue()).evidence
    assert (camera.kind, camera.value, camera.strength) == ("camera_exif", "SONY ILCE-7M4", INFORMATIVE)


def test_the_combined_verdict_keeps_its_basis(tmp_path):
    declared = read_provenance(png_with_text(tmp_path / "a.png", parameters=A1111))
    assert combine("real", declared) == ("synthetic", "declared")
    assert combine("synthetic", declared) == ("synthetic", "both")
    assert combine("real", None) == ("real", "pixels")


def test_c2pa_signed_image_untrusted_signer_and_edit_after_signing(tmp_path, sign_c2pa):
    signed = sign_c2pa(jpeg_bytes(), "trainedAlgorithmicMedia")
    found = read_provenance(signed)
    c2pa = next(e for e in found.evidence if e.kind == "c2pa")
    assert c2pa.strength == DECLARES_SYNTHETIC and found.declared == "synthetic"
    assert c2pa.detail["claim_generator"] == "synthdet test generator"
    assert c2pa.detail["signer"] == "Throwaway Test Org" and c2pa.detail["signer_trusted"] is False
    assert "signingCredential.untrusted" in c2pa.detail["failures"]
    assert "untrusted" in c2pa.value and "signature valid" in c2pa.value
    assert c2pa.detail["actions"] == ["c2pa.created"]

    edited = bytearray(signed)
    edited[-100] ^= 0xFF  # a change to the image data after signing
    changed = next(e for e in read_provenance(bytes(edited)).evidence if e.kind == "c2pa")
    assert any(code.endswith("dataHash.mismatch") for code in changed.detail["failures"])
    assert "hash mismatch" in changed.value and changed.strength == DECLARES_SYNTHETIC  # still says what made it


def test_creation_recorded_in_an_ingredient_manifest_still_counts(sign_c2pa):
    """As ChatGPT and Sora sign their outputs: the active manifest records a conversion, and the
    c2pa.created with its source type sits in the manifest of the image it was converted from."""
    original = sign_c2pa(jpeg_bytes(), "trainedAlgorithmicMedia")
    converted = sign_c2pa(original, None, parent=original)
    c2pa = next(e for e in read_provenance(converted).evidence if e.kind == "c2pa")
    assert c2pa.detail["manifests"] == 2 and "c2pa.converted" in c2pa.detail["actions"]
    assert c2pa.detail["digital_source_types"] == ["trainedAlgorithmicMedia"] and c2pa.strength == DECLARES_SYNTHETIC


def test_a_signed_camera_capture_is_reported_as_such(sign_c2pa):
    found = read_provenance(sign_c2pa(jpeg_bytes(), "digitalCapture"))
    assert found.declared == "capture"
    assert combine("synthetic", found) == ("synthetic", "pixels")  # reported, not a verdict


def _png_chunk(ctype: bytes, data: bytes, length: int | None = None) -> bytes:
    return struct.pack(">I", len(data) if length is None else length) + ctype + data + struct.pack(
        ">I", zlib.crc32(ctype + data))


def _png_with_chunk(chunk: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels()).save(buffer, "PNG")
    data = buffer.getvalue()
    return data[:33] + chunk + data[33:]  # after the signature (8) and IHDR (25)


MALFORMED = {
    "huge_text_chunk": lambda: _png_with_chunk(_png_chunk(b"tEXt", b"parameters\x00" + b"x" * (MAX_SEGMENT_BYTES + 10))),
    "ztxt_bomb": lambda: _png_with_chunk(_png_chunk(b"zTXt", b"parameters\x00\x00" + zlib.compress(b"\x00" * (64 << 20)))),
    "chunk_claims_4gb": lambda: _png_with_chunk(_png_chunk(b"tEXt", b"Comment\x00hi", length=0xFFFFFFF0)),
    "truncated_jpeg_segment": lambda: jpeg_bytes()[:2] + b"\xff\xe1\xff\xf0Exif\x00\x00II*\x00",
    "jpeg_segment_length_1": lambda: jpeg_bytes()[:2] + b"\xff\xe1\x00\x01" + jpeg_bytes()[2:],
    "broken_xmp": lambda: with_segment(jpeg_bytes(), 0xE1, b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:RDF></x:xmpmeta>"),
    "xml_entity_bomb": lambda: with_segment(jpeg_bytes(), 0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + (
        '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">' + "".join(
            f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
        + ']><x:xmpmeta><rdf:RDF>&i;</rdf:RDF></x:xmpmeta>').encode()),
    "broken_jumbf": lambda: with_segment(jpeg_bytes(), 0xEB, b"JP\x00\x00\x00\x00\x00\x01" + b"\x00\x00\x00\x20jumbc2pa" + b"\xff" * 40),
    "broken_exif": lambda: jpeg_bytes(exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff"),
    "many_tiny_chunks": lambda: _png_with_chunk(_png_chunk(b"tEXt", b"a\x00b") * 20_000),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_metadata_is_evidence_never_a_crash(name, tmp_path):
    path = tmp_path / f"{name}.{'png' if name.endswith(('chunk', 'bomb', 'chunks', '4gb')) and 'jpeg' not in name else 'jpg'}"
    path.write_bytes(MALFORMED[name]())
    found = read_provenance(path)  # never raises
    assert found.declared is None
    if name != "many_tiny_chunks":  # harmless chunks, only many of them
        assert any(e.strength == ERROR for e in found.evidence), found.evidence
    assert len(found.evidence) < 100  # bounded, whatever the file repeats


def test_predictions_carry_provenance_beside_pixels_and_can_skip_it(tmp_path, sign_c2pa):
    from test_inference import fake_detector

    signed = tmp_path / "signed.jpg"
    signed.write_bytes(sign_c2pa(jpeg_bytes(), "trainedAlgorithmicMedia"))
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(jpeg_bytes())
    detector = fake_detector()
    declared, pixels_only = detector.predict([signed, plain], workers=0)
    assert (declared.verdict, declared.basis) == ("synthetic", "declared" if declared.label == "real" else "both")
    assert declared.provenance["declared"] == "synthetic" and "Throwaway Test Org" in declared.provenance["summary"]
    assert (pixels_only.verdict, pixels_only.basis) == (pixels_only.label, "pixels")
    skipped = detector.predict([signed], workers=0, provenance=False)[0]
    assert skipped.provenance is None and skipped.basis == "pixels" and skipped.verdict == skipped.label


@pytest.mark.slow
def test_predict_cli_says_declared_synthetic_with_the_pixel_probability(tmp_path, cli, checkpoint, sign_c2pa):
    signed = tmp_path / "signed.jpg"
    signed.write_bytes(sign_c2pa(jpeg_bytes(), "trainedAlgorithmicMedia"))
    broken = tmp_path / "broken_jumbf.jpg"
    broken.write_bytes(MALFORMED["broken_jumbf"]())
    code, out, err = cli("predict", signed, broken, "-m", checkpoint, "--json", "--workers", "0")
    assert code == 0 and "Traceback" not in err
    rows = {Path(r["input"]).name: r for r in map(json.loads, out.splitlines())}
    assert rows["signed.jpg"]["verdict"] == "synthetic" and rows["signed.jpg"]["basis"] in ("declared", "both")
    assert 0 <= rows["signed.jpg"]["prob_synthetic"] <= 1 and rows["signed.jpg"]["label"] in ("real", "synthetic")
    assert rows["broken_jumbf.jpg"]["basis"] == "pixels" and rows["broken_jumbf.jpg"]["error"] is None
    assert any(e["strength"] == ERROR for e in rows["broken_jumbf.jpg"]["provenance"]["evidence"])

    code, out, _ = cli("predict", signed, "-m", checkpoint, "--csv", "--workers", "0")
    row = next(csv.DictReader(io.StringIO(out)))
    assert row["verdict"] == "synthetic" and "C2PA" not in row["provenance"] and "trainedAlgorithmicMedia" in row["provenance"]
    code, out, _ = cli("predict", signed, "-m", checkpoint, "--json", "--no-provenance", "--workers", "0")
    row = json.loads(out)
    assert row["provenance"] is None and row["basis"] == "pixels" and row["verdict"] == row["label"]
