"""Turn command-line style inputs (files, folders, globs) into a list of image files."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable

from synthdet.data.sources import IgnoredFiles, iter_image_files


def expand_inputs(inputs: Iterable[str | os.PathLike],
                  ignored: IgnoredFiles | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """Files to score plus (input, problem) pairs for inputs that name nothing usable.

    A file is taken as given, whatever its extension (decoding will judge it); a folder
    contributes every image below it (what it passes over is counted in ``ignored``);
    anything else is tried as a glob pattern.
    """
    files: list[str] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_file():
            files.append(text)
        elif path.is_dir():
            found = [str(p) for p in iter_image_files(path, ignored)]
            _add(found, text, "folder contains no images", files, problems)
        elif glob.has_magic(text):
            found = [m for m in sorted(glob.glob(text, recursive=True)) if os.path.isfile(m)]
            _add(found, text, "pattern matches no files", files, problems)
        else:
            problems.append((text, "no such file or folder"))
    return files, problems


def _add(found: list[str], item: str, problem: str, files: list, problems: list) -> None:
    if found:
        files.extend(found)
    else:
        problems.append((item, problem))
