"""What an image file says about where it came from, beside what its pixels say.

Generators and cameras often write down what made an image: C2PA Content Credentials (a
signed manifest: OpenAI, Google, Adobe, Microsoft sign their outputs; Leica, Sony, Nikon
sign photos), the IPTC digital source type in XMP (``trainedAlgorithmicMedia``...),
generator settings in PNG text chunks (AUTOMATIC1111/Forge ``parameters``, ComfyUI
``prompt``/``workflow``, InvokeAI, NovelAI) and camera EXIF. :func:`read_provenance`
returns each piece as :class:`Evidence` with what it is worth:

- ``declares_synthetic``: a C2PA claim whose signature verifies (valid, or with a hash
  mismatch because the image was edited after signing) or whose source type is synthetic,
  an IPTC synthetic source type, or a generator's own settings block. These make the
  combined verdict synthetic (basis ``declared``).
- ``declares_capture``: a C2PA-signed ``digitalCapture``; reported as such, never a verdict.
- ``informative``: camera EXIF, software tags, comments. Anyone can write them, so they never
  make an image "real".
- ``error``: metadata that could not be read (truncated, oversized, malformed), recorded as
  evidence of its own instead of stopping anything.

Structures are parsed, never substrings: the word "OpenAI" in a caption is not evidence.
Reads are bounded (metadata segments only, each capped; pixels are never decoded here).
Signers are checked against a trust list only when one is configured
(``SYNTHDET_C2PA_TRUST_ANCHORS``, a PEM file of trust anchors); otherwise the evidence says
that the signer was not checked.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import struct
import warnings
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator
from xml.etree import ElementTree

from PIL import Image

#: IPTC digital source types (http://cv.iptc.org/newscodes/digitalsourcetype/) that say "made by an algorithm".
SYNTHETIC_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia",
                                    "algorithmicMedia", "compositeSynthetic"})
#: ... and those that say "captured by a camera".
CAPTURE_SOURCE_TYPES = frozenset({"digitalCapture", "computationalCapture"})

#: Bounds on what is read: one metadata segment or chunk, all of them together, and how many.
MAX_SEGMENT_BYTES = 1 << 20
MAX_METADATA_BYTES = 8 << 20
MAX_SEGMENTS = 4096
#: Files larger than this are not handed to the C2PA library (it reads the whole file to check hashes).
MAX_C2PA_FILE_BYTES = 256 << 20

IPTC_EXT_NS = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
XMP_SIGNATURE = b"http://ns.adobe.com/xap/1.0/\x00"
EXIF_SIGNATURE = b"Exif\x00\x00"
TRUST_ANCHORS_ENV = "SYNTHDET_C2PA_TRUST_ANCHORS"

DECLARES_SYNTHETIC, DECLARES_CAPTURE, INFORMATIVE, ERROR = (
    "declares_synthetic", "declares_capture", "informative", "error")


@dataclass(frozen=True)
class Evidence:
    """One piece of provenance: what it is, its value, where it was found and what it is worth."""

    kind: str  # c2pa, iptc_source_type, generator_settings, camera_exif, software, comment, metadata_error
    value: str
    where: str
    strength: str  # declares_synthetic, declares_capture, informative, error
    detail: dict = field(default_factory=dict)


@dataclass
class Provenance:
    """Every piece of evidence in one file, and what they declare together."""

    evidence: list[Evidence] = field(default_factory=list)

    @property
    def declared(self) -> str | None:
        """"synthetic" when any evidence declares it, "capture" for a signed camera capture, else None."""
        strengths = {e.strength for e in self.evidence}
        if DECLARES_SYNTHETIC in strengths:
            return "synthetic"
        return "capture" if DECLARES_CAPTURE in strengths else None

    @property
    def summary(self) -> str:
        """One line for a table: what declares the verdict, else the informative pieces."""
        order = (DECLARES_SYNTHETIC, DECLARES_CAPTURE, INFORMATIVE, ERROR)
        shown = sorted(self.evidence, key=lambda e: order.index(e.strength))
        return "; ".join(f"{e.kind}: {e.value}" for e in shown[:3]) + (" ..." if len(shown) > 3 else "")

    def to_dict(self) -> dict:
        return {"declared": self.declared, "summary": self.summary, "evidence": [asdict(e) for e in self.evidence]}


def combine(pixel_label: str | None, provenance: Provenance | None) -> tuple[str | None, str]:
    """The combined verdict and its basis: ``declared`` (provenance alone says synthetic),
    ``both`` (provenance and pixels say synthetic), or ``pixels``."""
    if provenance is not None and provenance.declared == "synthetic":
        return "synthetic", "both" if pixel_label == "synthetic" else "declared"
    return pixel_label, "pixels"


def read_provenance(source: str | os.PathLike | bytes) -> Provenance:
    """The provenance evidence of one image file (a path or its bytes); never raises for bad metadata."""
    found = Provenance()
    try:
        with _opened(source) as fh:
            segments = _metadata_segments(fh, found)
            for kind, payload in segments:
                _read_segment(kind, payload, found)
        if any(kind == "c2pa" for kind, _ in segments):
            _read_c2pa(source, found)
    except OSError as exc:
        found.evidence.append(Evidence("metadata_error", f"cannot read the file ({exc.strerror or exc})",
                                       "file", ERROR))
    return found


@contextlib.contextmanager
def _opened(source) -> Iterator[BinaryIO]:
    """A binary file handle for a path or bytes."""
    with (io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")) as fh:
        yield fh


# --- finding metadata in the container, bounded ----------------------------------------------------


class _Budget:
    def __init__(self, found: Provenance):
        self.found, self.total, self.count = found, 0, 0

    def take(self, length: int, where: str) -> bool:
        """Whether a segment of ``length`` bytes may be read; an oversized one is recorded as an error."""
        self.count += 1
        if length > MAX_SEGMENT_BYTES or self.total + length > MAX_METADATA_BYTES:
            self.found.evidence.append(Evidence(
                "metadata_error", f"{where} of {length:,} bytes not read (over the {MAX_SEGMENT_BYTES:,}-byte limit "
                f"per segment, {MAX_METADATA_BYTES:,} in all)", where, ERROR))
            return False
        self.total += length
        return True


def _metadata_segments(fh: BinaryIO, found: Provenance) -> list[tuple[str, bytes]]:
    """(kind, payload) of each metadata segment: exif, xmp, text:<keyword>, comment, c2pa."""
    head = fh.read(12)
    fh.seek(0)
    budget = _Budget(found)
    try:
        if head.startswith(b"\xff\xd8"):
            return _jpeg_segments(fh, budget)
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png_segments(fh, budget)
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return _riff_segments(fh, budget)
    except (struct.error, ValueError, EOFError) as exc:
        found.evidence.append(Evidence("metadata_error", f"malformed metadata ({exc})", "container", ERROR))
        return []
    return _pillow_segments(fh, found)


def _truncated(found_where: str) -> ValueError:
    return ValueError(f"file ends inside {found_where}")


def _read_exact(fh: BinaryIO, n: int, where: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise _truncated(where)
    return data


def _jpeg_segments(fh: BinaryIO, budget: _Budget) -> list[tuple[str, bytes]]:
    """APP1 (EXIF, XMP), APP11 (JUMBF: C2PA) and COM segments, up to the start of the scan."""
    fh.seek(2)
    segments = []
    while budget.count < MAX_SEGMENTS:
        marker = fh.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            break  # no further marker: the metadata part is over (or damaged; pixels are not our job)
        code = marker[1]
        if code == 0xFF:  # fill byte
            fh.seek(-1, io.SEEK_CUR)
            continue
        if code == 0xDA or code == 0xD9:  # start of scan / end of image
            break
        if 0xD0 <= code <= 0xD7 or code == 0x01:  # markers without a length
            continue
        (length,) = struct.unpack(">H", _read_exact(fh, 2, "a JPEG segment header"))
        if length < 2:
            raise ValueError(f"JPEG segment 0x{code:02X} claims {length} bytes")
        where = f"JPEG APP{code - 0xE0}" if 0xE0 <= code <= 0xEF else f"JPEG marker 0x{code:02X}"
        kind = {0xE1: "app1", 0xEB: "c2pa", 0xFE: "comment"}.get(code)
        if kind is None or not budget.take(length - 2, where):
            fh.seek(length - 2, io.SEEK_CUR)
            continue
        payload = _read_exact(fh, length - 2, where)
        if kind == "app1":
            if payload.startswith(EXIF_SIGNATURE):
                segments.append(("exif", payload[len(EXIF_SIGNATURE):]))
            elif payload.startswith(XMP_SIGNATURE):
                segments.append(("xmp", payload[len(XMP_SIGNATURE):]))
        elif kind == "c2pa":
            if b"c2pa" in payload[:64]:  # a JUMBF box labelled c2pa (the manifest store), parsed by c2pa below
                segments.append(("c2pa", b""))
        else:
            segments.append(("comment", payload))
    return segments


#: Chunked containers: how a chunk header reads, and the chunk types that hold metadata.
PNG_CHUNKS = {b"tEXt": "text", b"zTXt": "text", b"iTXt": "text", b"eXIf": "exif", b"caBX": "c2pa"}
WEBP_CHUNKS = {b"EXIF": "exif", b"XMP ": "xmp", b"C2PA": "c2pa"}


def _chunks(fh: BinaryIO, budget: _Budget, container: str) -> Iterator[tuple[str, bytes, bytes]]:
    """(kind, chunk type, data) of the metadata chunks of a PNG (big-endian length, type, data, CRC)
    or a WebP (RIFF: type, little-endian length, data padded to an even size); the rest is skipped."""
    png = container == "PNG"
    fh.seek(8 if png else 12)
    while budget.count < MAX_SEGMENTS:
        header = fh.read(8)
        if len(header) < 8 or header[4:] == b"IEND":
            return
        length, ctype = struct.unpack(">I4s", header) if png else struct.unpack("<4sI", header)[::-1]
        trailer = 4 if png else length & 1  # PNG's CRC, RIFF's padding byte
        kind = (PNG_CHUNKS if png else WEBP_CHUNKS).get(ctype)
        where = f"{container} {ctype.decode('latin-1').strip()} chunk"
        if kind == "c2pa":  # the manifest store: c2pa reads it from the whole file
            yield kind, ctype, b""
        elif kind and budget.take(length, where):
            yield kind, ctype, _read_exact(fh, length, f"a {where}")
            fh.seek(trailer, io.SEEK_CUR)
            continue
        fh.seek(length + trailer, io.SEEK_CUR)


def _png_segments(fh: BinaryIO, budget: _Budget) -> list[tuple[str, bytes]]:
    """Text chunks (generator settings, XMP), eXIf and caBX (C2PA); image data is skipped."""
    segments = []
    for kind, ctype, data in _chunks(fh, budget, "PNG"):
        if kind == "text":
            keyword, text = _png_text(ctype, data)
            kind, data = ("xmp", text.encode()) if keyword == "XML:com.adobe.xmp" else (f"text:{keyword}", text.encode())
        segments.append((kind, data))
    return segments


def _png_text(ctype: bytes, data: bytes) -> tuple[str, str]:
    """Keyword and text of a PNG text chunk; compressed text is inflated up to the segment limit."""
    keyword, _, rest = data.partition(b"\x00")
    if ctype == b"tEXt":
        return keyword.decode("latin-1"), rest.decode("latin-1")
    if ctype == b"zTXt":
        return keyword.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")
    compressed, _method = rest[0:1] == b"\x01", rest[1:2]
    _language, _, rest = rest[2:].partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    return keyword.decode("latin-1"), (_inflate(text) if compressed else text).decode("utf-8", "replace")


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_SEGMENT_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError(f"compressed text inflates past {MAX_SEGMENT_BYTES:,} bytes")
    return out


def _riff_segments(fh: BinaryIO, budget: _Budget) -> list[tuple[str, bytes]]:
    """WebP: EXIF, XMP and C2PA chunks."""
    return [(kind, data[len(EXIF_SIGNATURE):] if data.startswith(EXIF_SIGNATURE) else data)
            for kind, _, data in _chunks(fh, budget, "WebP")]


def _pillow_segments(fh: BinaryIO, found: Provenance) -> list[tuple[str, bytes]]:
    """Other formats (TIFF, HEIF with a plugin, GIF...): EXIF and XMP as Pillow finds them on open."""
    try:
        with Image.open(fh) as img:
            exif = img.getexif().tobytes() if img.getexif() else b""
            xmp = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp") or b""
    except Exception:  # not an image Pillow knows: the pixel path reports that
        return []
    segments = [("exif", exif)] if exif else []
    if xmp:
        segments.append(("xmp", xmp if isinstance(xmp, bytes) else str(xmp).encode()))
    return segments


# --- what each segment says ------------------------------------------------------------------------


def _read_segment(kind: str, payload: bytes, found: Provenance) -> None:
    try:
        if kind == "exif":
            _read_exif(payload, found)
        elif kind == "xmp":
            _read_xmp(payload, found)
        elif kind == "comment":
            text = payload.decode("utf-8", "replace").strip()
            if text:
                found.evidence.append(Evidence("comment", text[:200], "JPEG COM", INFORMATIVE))
        elif kind.startswith("text:"):
            _read_png_text(kind[5:], payload.decode("utf-8", "replace"), found)
    except Exception as exc:  # a parser's own error on malformed data: evidence, not a crash
        found.evidence.append(Evidence("metadata_error", f"malformed {kind} ({type(exc).__name__}: {exc})"[:300],
                                       kind, ERROR))


#: EXIF tags (0th IFD and the Exif sub-IFD) that describe the device and the software.
EXIF_TAGS = {0x010F: "Make", 0x0110: "Model", 0x0131: "Software", 0x9003: "DateTimeOriginal"}


def _read_exif(payload: bytes, found: Provenance) -> None:
    exif = Image.Exif()
    with warnings.catch_warnings(record=True) as caught:  # Pillow warns, rather than raises, on corrupt EXIF
        warnings.simplefilter("always")
        exif.load(payload)
        values = dict(exif.items())
        values.update(exif.get_ifd(0x8769).items())
    if caught:
        found.evidence.append(Evidence("metadata_error", f"malformed EXIF ({caught[0].message})"[:300], "EXIF", ERROR))
    fields = {name: str(values[tag]).strip("\x00 ").strip() for tag, name in EXIF_TAGS.items()
              if tag in values and str(values[tag]).strip("\x00 ")}
    camera = {k: v for k, v in fields.items() if k in ("Make", "Model", "DateTimeOriginal")}
    if camera.get("Make") or camera.get("Model"):
        value = " ".join(v for v in (camera.get("Make"), camera.get("Model")) if v)
        found.evidence.append(Evidence("camera_exif", value, "EXIF", INFORMATIVE, camera))
    if "Software" in fields:
        found.evidence.append(Evidence("software", fields["Software"], "EXIF Software", INFORMATIVE))


def _read_xmp(payload: bytes, found: Provenance) -> None:
    """The IPTC digital source type, as an element or an attribute anywhere in the XMP packet."""
    text = payload.decode("utf-8", "replace")
    for opening, closing in (("<x:xmpmeta", "</x:xmpmeta>"), ("<rdf:RDF", "</rdf:RDF>")):
        start, end = text.find(opening), text.rfind(closing)
        if start >= 0 and end > start:
            root = ElementTree.fromstring(text[start:end + len(closing)])
            break
    else:
        raise ValueError("no XMP packet (x:xmpmeta or rdf:RDF)")
    tag = f"{{{IPTC_EXT_NS}}}DigitalSourceType"
    values = [el.text or el.get("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}resource") or ""
              for el in root.iter(tag)]
    values += [el.get(tag) for el in root.iter() if el.get(tag)]
    for value in values:
        code = value.strip().rstrip("/").rsplit("/", 1)[-1]
        if not code:
            continue
        strength = DECLARES_SYNTHETIC if code in SYNTHETIC_SOURCE_TYPES else INFORMATIVE
        found.evidence.append(Evidence("iptc_source_type", code, "XMP Iptc4xmpExt:DigitalSourceType", strength,
                                       {"uri": value.strip()}))


def _read_png_text(keyword: str, text: str, found: Provenance) -> None:
    """Generator settings blocks, recognised by their structure; other text chunks are reported as such."""
    tool, graph = None, _json_object(text)
    if keyword == "parameters" and _a1111_settings(text):
        tool = "AUTOMATIC1111/Forge"
    elif keyword == "workflow" and isinstance(graph.get("nodes"), list):
        tool = "ComfyUI"
    elif keyword == "prompt" and graph and all(isinstance(v, dict) and "class_type" in v for v in graph.values()):
        tool = "ComfyUI"
    elif keyword in ("invokeai_metadata", "sd-metadata", "invokeai_graph") and graph:
        tool = "InvokeAI"
    elif keyword == "Comment" and {"steps", "sampler"} <= set(graph):
        tool = "NovelAI"
    elif keyword == "Software" and text.strip() == "NovelAI":
        tool = "NovelAI"
    if tool:
        found.evidence.append(Evidence("generator_settings", tool, f"PNG text chunk {keyword!r}",
                                       DECLARES_SYNTHETIC, {"excerpt": text[:200]}))
    elif keyword in ("Software", "Comment", "Description", "Source", "Author"):
        found.evidence.append(Evidence("software" if keyword == "Software" else "comment", text.strip()[:200],
                                       f"PNG text chunk {keyword!r}", INFORMATIVE))


def _a1111_settings(text: str) -> dict[str, str]:
    """The settings line that ends an AUTOMATIC1111/Forge ``parameters`` block ("Steps: 30, Sampler: ...,
    Seed: 1234, ..."), as a dict; empty unless it holds an integer step count and a sampler or seed."""
    lines = text.strip().splitlines()
    pairs = re.split(r",\s*(?=[A-Za-z][\w /+.-]*: )", lines[-1]) if lines else []
    settings = dict(pair.split(": ", 1) for pair in pairs if ": " in pair)
    has_steps = settings.get("Steps", "").strip().isdigit()
    return settings if has_steps and ("Sampler" in settings or "Seed" in settings) else {}


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --- C2PA Content Credentials ----------------------------------------------------------------------


def _read_c2pa(source, found: Provenance) -> None:
    """The active manifest through the official c2pa-python bindings: claim generator, actions and
    their digital source type, signer, and the validation state with its failure codes."""
    try:
        import c2pa
    except ImportError:
        found.evidence.append(Evidence("c2pa", "manifest present, not read (c2pa-python is not installed)",
                                       "C2PA manifest store", INFORMATIVE))
        return
    data = source if isinstance(source, (bytes, bytearray)) else None
    size = len(data) if data is not None else Path(source).stat().st_size
    if size > MAX_C2PA_FILE_BYTES:
        found.evidence.append(Evidence("metadata_error", f"C2PA manifest not checked: file over "
                                       f"{MAX_C2PA_FILE_BYTES >> 20} MB", "C2PA manifest store", ERROR))
        return
    try:
        with _c2pa_context() as context:
            if data is None:
                with open(source, "rb") as fh:
                    data = fh.read()
            reader = c2pa.Reader(_mime_type(data), io.BytesIO(data), context=context)
            try:
                store = json.loads(reader.json())
                state = reader.get_validation_state() or "unknown"
                results = reader.get_validation_results() or {}
            finally:
                reader.close()
    except Exception as exc:  # c2pa raises its own errors for broken or foreign manifests
        found.evidence.append(Evidence("metadata_error", f"C2PA manifest could not be read "
                                       f"({type(exc).__name__}: {str(exc)[:200]})", "C2PA manifest store", ERROR))
        return
    found.evidence.append(_c2pa_evidence(store, state, results))


def _actions(manifest: dict) -> list[dict]:
    return [a for assertion in manifest.get("assertions", []) if str(assertion.get("label", "")).startswith(
        "c2pa.actions") for a in (assertion.get("data") or {}).get("actions", []) if isinstance(a, dict)]


def _c2pa_evidence(store: dict, state: str, results: dict) -> Evidence:
    """What the manifest store says: the active manifest's claim and signature, and the actions of
    its whole history (an edited or converted image keeps its creation in an ingredient's manifest:
    ChatGPT's and Sora's outputs carry ``c2pa.created`` there)."""
    manifests = store.get("manifests") or {}
    manifest = manifests.get(store.get("active_manifest"), {})
    history = [manifest] + [m for label, m in manifests.items() if label != store.get("active_manifest")]
    active = results.get("activeManifest") or {}
    failures = sorted({f.get("code", "") for f in active.get("failure", [])})
    successes = {s.get("code", "") for s in active.get("success", [])}
    signature_ok = "claimSignature.validated" in successes and not any(
        code.startswith("claimSignature.") and code != "claimSignature.insideValidity" for code in failures)
    hash_mismatch = any(code.endswith(".mismatch") and not code.startswith("claimSignature.") for code in failures)
    trusted = "signingCredential.trusted" in successes
    actions = [a for m in history for a in _actions(m)]
    source_types = [str(a.get("digitalSourceType", "")).rstrip("/").rsplit("/", 1)[-1] for a in actions
                    if a.get("digitalSourceType")]
    agents = sorted({str(a["softwareAgent"].get("name") if isinstance(a.get("softwareAgent"), dict)
                         else a.get("softwareAgent")) for a in actions if a.get("action") == "c2pa.created"
                     and a.get("softwareAgent")})
    generator = ", ".join(g.get("name", "") for g in manifest.get("claim_generator_info", []) if g.get("name")) \
        or str(manifest.get("claim_generator", ""))
    signer = manifest.get("signature_info") or {}
    detail = {
        "claim_generator": generator, "signer": signer.get("issuer") or signer.get("common_name"),
        "signer_common_name": signer.get("common_name"), "signed_at": signer.get("time"),
        "actions": [a.get("action") for a in actions], "digital_source_types": source_types,
        "created_by": agents, "manifests": len(manifests),
        "validation_state": state, "failures": failures,
        "signer_checked": "against the configured trust list" if os.environ.get(TRUST_ANCHORS_ENV)
        else "not checked against a trust list (none configured)",
        "signer_trusted": trusted,
    }
    synthetic = any(t in SYNTHETIC_SOURCE_TYPES for t in source_types)
    capture = any(t in CAPTURE_SOURCE_TYPES for t in source_types)
    integrity = "signature valid" if signature_ok and not hash_mismatch else (
        "signature valid, image changed after signing (hash mismatch)" if signature_ok else "signature does not verify")
    who = detail["signer"] or "unknown signer"
    trust = "trusted" if trusted else ("untrusted" if os.environ.get(TRUST_ANCHORS_ENV)
                                       else "untrusted: no trust list configured")
    if "signingCredential.expired" in failures:
        trust += ", credential expired"
    maker = " via ".join(filter(None, [", ".join(agents), generator])) or "unknown generator"
    value = (f"{'/'.join(dict.fromkeys(source_types)) or 'no source type'} by {maker} "
             f"(signed by {who}, {trust}; {integrity})")
    if signature_ok and synthetic:
        strength = DECLARES_SYNTHETIC
    elif signature_ok and capture and not hash_mismatch:
        strength = DECLARES_CAPTURE
    else:
        strength = INFORMATIVE
    return Evidence("c2pa", value, "C2PA manifest", strength, detail)


def _mime_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"


@contextlib.contextmanager
def _c2pa_context():
    """A c2pa Context that never reaches the network (no remote manifests, no OCSP) and uses the
    trust anchors of ``SYNTHDET_C2PA_TRUST_ANCHORS`` when set."""
    import c2pa

    settings = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
    anchors = os.environ.get(TRUST_ANCHORS_ENV)
    if anchors:
        settings["trust"] = {"trust_anchors": Path(anchors).read_text()}
    context = c2pa.Context.from_dict(settings)
    try:
        yield context
    finally:
        context.close()
