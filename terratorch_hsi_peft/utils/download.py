"""Fetch files over HTTP(S) safely: atomic writes, size and checksum checks.

A download is streamed into a temporary file next to its destination and moved into place with
``os.replace`` only after every check passed, so an interrupted or corrupt transfer never leaves a
file that looks whole.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so stale temporary files are left alone
    fcntl = None

__all__ = ["DownloadError", "atomic_write", "download_url", "remove_stale_parts", "sha256sum"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed or its result did not match what was expected."""


def sha256sum(path: str | os.PathLike) -> str:
    """Return the hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", check: Callable[[Path], None] | None = None
) -> Iterator[IO]:
    """Open a temporary file beside ``path``; move it onto ``path`` only if the block succeeds.

    Args:
        path: the final file.
        mode: the ``open`` mode of the temporary file.
        check: called with the complete, closed temporary file before it is moved into place;
            raising rejects it.

    On any exception the temporary file is removed and ``path`` is left untouched (an existing
    file there survives). The temporary file, ``.<name>.<random>.part``, is locked while it is
    written; one left behind by a killed writer (SIGKILL, power loss) holds no lock and is
    removed by the next write to ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path.parent, re.escape(path.name))
    fd, tmp, lock = _locked_temp_file(path)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are ordinary shared files
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        if lock is not None:  # held until the file is in place, so no cleaner removes it
            os.close(lock)


def _locked_temp_file(path: Path) -> tuple[int, str, int | None]:
    """A new temporary file beside ``path``: its descriptor, its name, and a descriptor holding
    its lock (``None`` without ``fcntl``)."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        if fcntl is None:
            return fd, tmp, None
        lock = os.dup(fd)  # the lock outlives the file object, which closes fd
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.fstat(lock).st_nlink:
            return fd, tmp, lock
        # A concurrent writer took it for stale between mkstemp and flock: make another.
        os.close(lock)
        os.close(fd)


def remove_stale_parts(folder: str | os.PathLike, names: str) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` left for files named like ``names``.

    Only files whose writer is gone (killed mid-write: no lock held) are removed; a write in
    progress is left alone.

    Args:
        folder: the folder holding the files.
        names: a regular expression matching the whole name of the written files.

    Returns:
        The paths removed.
    """
    removed: list[Path] = []
    if fcntl is None:
        return removed
    # mkstemp's names: ".<name>.", 8 characters of [a-z0-9_], ".part".
    pattern = re.compile(rf"\.(?:{names})\.[a-z0-9_]{{8}}\.part")
    for entry in os.scandir(folder):
        if not pattern.fullmatch(entry.name):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # a live writer holds it
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
            logger.info("Removed %s, left by an interrupted write.", entry.path)
        os.close(fd)
    return removed


def download_url(
    url: str,
    path: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    timeout: float = 60.0,
    overwrite: bool = False,
    validate: Callable[[Path], None] | None = None,
    sha256_option: str | None = None,
) -> Path:
    """Download ``url`` to ``path`` atomically and verify it.

    Args:
        url: HTTP(S) or ``file://`` address.
        path: destination file.
        sha256: expected hex digest; checked when given.
        size: expected size in bytes; checked when given (and against ``Content-Length``).
        timeout: socket timeout in seconds.
        overwrite: download again even if a verified file is already at ``path`` (a file that
            fails verification is always fetched again).
        validate: called with the downloaded file (still under a temporary name) after the size
            and checksum checks; raising rejects it, e.g. an HTML error page served whole. A file
            already at ``path`` is not validated again.
        sha256_option: the setting the user gave ``sha256`` in (e.g. ``"backbone_ckpt_sha256"``),
            named when the digest differs: a mistyped digest is as likely as a damaged file.

    Returns:
        The destination path.

    Raises:
        DownloadError: the transfer failed or was cut short, the size or checksum differ, or
            ``validate`` rejected the file. Nothing is left at ``path`` in that case (an earlier
            file there is kept).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        try:
            _verify(path, sha256, size)
            return path
        except DownloadError:
            pass  # a stale or damaged copy: fetch it again, replacing it atomically
    check = None if validate is None else functools.partial(_validated, validate, url, path)
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout) as response,
            atomic_write(path, check=check) as out,
        ):
            expected = response.headers.get("Content-Length")
            written = 0
            digest = hashlib.sha256()
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
            if expected is not None and written != int(expected):
                raise DownloadError(
                    f"Transfer of {url} was cut short: got {written} of {expected} bytes. "
                    "Nothing was written; run the download again."
                )
            # Both causes are named: downloading again cannot fix a mistyped digest.
            given = f"the digest given ({sha256_option})" if sha256_option else "the digest"
            digest_fix = (
                "Either the file is corrupt (a damaged transfer) or changed upstream: nothing was "
                f"kept at {path}; run again to download it anew. Or {given} is wrong: compare it "
                "with the sha256 the publisher gives and correct it."
            )
            _check(written, digest.hexdigest(), sha256, size, url, digest_fix)
    except DownloadError:
        raise
    except OSError as err:  # URLError, HTTPError, timeouts, connection resets
        raise DownloadError(
            f"Could not download {url} to {path}: {err}. Check the address and your connection, "
            "or place the file at that path by hand."
        ) from err
    return path


def _validated(validate: Callable[[Path], None], url: str, path: Path, tmp: Path) -> None:
    try:
        validate(tmp)
    except Exception as err:
        raise DownloadError(
            f"{url} did not give a usable file: {err} Nothing was kept at {path}; check the "
            "address (a server error page or a cut transfer can arrive as an ordinary reply)."
        ) from err


def _verify(path: Path, sha256: str | None, size: int | None) -> None:
    digest = sha256sum(path) if sha256 else None
    _check(path.stat().st_size, digest, sha256, size, str(path), "Delete it and download again.")


def _check(
    actual_size: int,
    actual_sha: str | None,
    sha256: str | None,
    size: int | None,
    source: str,
    digest_fix: str,
) -> None:
    if size is not None and actual_size != size:
        raise DownloadError(
            f"{source}: expected {size} bytes, got {actual_size}. The file is truncated or not the "
            "one expected; delete it and download again."
        )
    if sha256 is not None and actual_sha != sha256.lower():
        raise DownloadError(
            f"{source}: sha256 {actual_sha} does not match the expected {sha256}. {digest_fix}"
        )
