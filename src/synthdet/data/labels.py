"""The two classes and the folder names people already use for them."""

from __future__ import annotations

CLASS_NAMES: tuple[str, str] = ("real", "synthetic")
REAL, SYNTHETIC = 0, 1

#: Lower-case folder names (and manifest labels) recognised for each class, covering the
#: layouts of public datasets: real/synthetic, real/fake, 0_real/1_fake (CNNDetection),
#: REAL/FAKE (CIFAKE), nature/ai (GenImage).
LABEL_ALIASES: dict[str, int] = {
    **{name: REAL for name in ("real", "0_real", "nature", "natural", "0", "authentic", "photo", "photos")},
    **{
        name: SYNTHETIC
        for name in (
            "synthetic", "fake", "1_fake", "ai", "1", "generated", "cg", "rendered", "render", "sim", "simulated",
        )
    },
}


def parse_label(value: str | int) -> int:
    """Map a label name or alias (case-insensitive) or 0/1 to a class index."""
    key = str(value).strip().lower()
    if key not in LABEL_ALIASES:
        known = ", ".join(sorted(LABEL_ALIASES))
        raise ValueError(f"unknown label {value!r}; use one of: {known}")
    return LABEL_ALIASES[key]
