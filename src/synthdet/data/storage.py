"""Where bytes live: local paths, or any fsspec URL (``s3://``, ``gs://``, ``https://``, ...).

Local paths keep going through the plain file system; a URL goes through fsspec, which
needs the protocol's package installed (``s3fs`` for ``s3://``, ``gcsfs`` for ``gs://``)
and says which one when it is missing.
"""

from __future__ import annotations

import contextlib
import re
from typing import BinaryIO, Iterator

import fsspec

from synthdet.rundir import atomic_path


def is_url(location: str) -> bool:
    """``s3://bucket/x``, ``https://host/x``, ``file:///x``: anything fsspec should open."""
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", str(location)) is not None


def expand_braces(pattern: str) -> list[str]:
    """``pool-{000000..000015}.tar`` -> the 16 names (zero padding kept); ``{a,b}`` gives alternatives.

    The WebDataset convention for naming a set of shards; shells expand the same syntax,
    so a pattern on a command line needs quotes.
    """
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        first, last = numeric.groups()
        choices = [str(i).zfill(len(first)) for i in range(int(first), int(last) + 1)]
    else:
        choices = body.split(",")
    head, tail = pattern[: match.start()], pattern[match.end():]
    return [name for choice in choices for name in expand_braces(head + choice + tail)]


def open_binary(location: str) -> BinaryIO:
    """A binary file object to read a local path or a URL (use it as a context manager)."""
    if is_url(location):
        return fsspec.open(location, "rb").open()
    return open(location, "rb")


@contextlib.contextmanager
def open_output(location: str) -> Iterator[BinaryIO]:
    """A binary file object to write a local path or a URL; a local file appears whole or not at all.

    Local files go through :func:`synthdet.rundir.atomic_path`, so a failed write is one
    :class:`~synthdet.rundir.OutputError` naming the file.
    """
    if is_url(location):
        with fsspec.open(location, "wb") as fh:
            yield fh
    else:
        with atomic_path(location) as tmp, open(tmp, "wb") as fh:
            yield fh


def read_bytes(location: str) -> bytes:
    with open_binary(location) as fh:
        return fh.read()


def join(base: str, name: str) -> str:
    """``name`` relative to the folder (or URL prefix) ``base``; absolute names and URLs stay as they are."""
    if is_url(name) or name.startswith("/"):
        return name
    return f"{base.rstrip('/')}/{name}"


def parent(location: str) -> str:
    """The folder (or URL prefix) holding ``location``."""
    return location.rstrip("/").rsplit("/", 1)[0] if "/" in location else "."
