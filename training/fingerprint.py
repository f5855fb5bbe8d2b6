"""The fingerprint of a run's data: sha256 of every file, streamed, and one digest over the sorted list.

The list holds paths relative to the data folder, so the same files elsewhere give the same digest and one changed
bit, a renamed or an added file another. Hidden files and folders (.git, fit's staging folders) are left out.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from device.errors import AcmonError

MAX_DATA_FILES = 1_000_000
"""More files than this under --data are not fingerprinted (a wrong --data, such as /, would take hours)."""
PROGRESS_BYTES = 256 * 1024 * 1024
"""Data sets at least this big show a progress bar while they are hashed (1.3 GB/s measured from the page cache)."""
HASH_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Fingerprint:
    """sha256 of the sorted lines 'path<TAB>size<TAB>sha256' of every data file (paths relative to the data)."""

    digest: str
    files: list[tuple[str, int, str]]

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self.files)

    def table(self) -> str:
        return "path\tsize_bytes\tsha256\n" + "".join(f"{p}\t{s}\t{h}\n" for p, s, h in self.files)


def data_files(data: str | Path, exclude: str | Path | None = None) -> tuple[Path, list[Path]]:
    """(the folder paths are relative to, the files): every non-hidden file under a data folder, or under a manifest's
    folder (where its relative paths start), or a single recording.

    Raises:
        AcmonError: the data does not exist, or holds more than MAX_DATA_FILES files.
    """
    root = Path(data)
    if root.is_file() and root.suffix.lower() != ".csv":
        return root.resolve().parent, [root]
    if root.is_file():
        root = root.resolve().parent
    if not root.is_dir():
        raise AcmonError(f"{root}: no such data folder or file")
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and (skip is None or Path(folder, d).resolve() != skip)
        )
        found += [Path(folder, n) for n in sorted(names) if not n.startswith(".")]
        if len(found) > MAX_DATA_FILES:
            raise AcmonError(f"{root}: more than {MAX_DATA_FILES} files; is --data the right folder?")
    return root.resolve(), found


def fingerprint(data: str | Path, exclude: str | Path | None = None, progress: bool = True) -> Fingerprint:
    """Hash every data file (sha256, streamed); a file that cannot be read is listed with 'unreadable'.

    Raises:
        AcmonError: as data_files().
    """
    base, paths = data_files(data, exclude)
    sizes = []
    for path in paths:
        try:
            sizes.append(path.stat().st_size)
        except OSError:
            sizes.append(0)
    rows = []
    with tqdm(
        total=sum(sizes),
        desc="fingerprint",
        unit="B",
        unit_scale=True,
        disable=not progress or sum(sizes) < PROGRESS_BYTES,
    ) as bar:
        for path, size in zip(paths, sizes):
            digest = hashlib.sha256()
            try:
                with open(path, "rb") as f:
                    while chunk := f.read(HASH_CHUNK_BYTES):
                        digest.update(chunk)
                        bar.update(len(chunk))
                hexdigest = digest.hexdigest()
            except OSError:
                hexdigest = "unreadable"
            try:
                name = path.resolve().relative_to(base).as_posix()
            except ValueError:
                name = str(path.resolve())
            rows.append((name, size, hexdigest))
    rows.sort()
    listing = "".join(f"{p}\t{s}\t{h}\n" for p, s, h in rows)
    return Fingerprint(hashlib.sha256(listing.encode()).hexdigest(), rows)
