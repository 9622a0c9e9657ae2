"""atomic_write: all or nothing, ordinary file permissions, no stale temporary file."""

import os
import signal
import stat
import subprocess
import sys

import pytest

from terratorch_hsi_peft.utils.download import DownloadError, atomic_write, download_url


def test_success_replaces_the_file_with_shared_permissions(tmp_path):
    target = tmp_path / "out" / "map.npy"
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    assert os.listdir(target.parent) == ["map.npy"]


def test_failure_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    target = tmp_path / "adapters.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["adapters.safetensors"]


def test_a_damaged_local_copy_is_fetched_again(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    target = tmp_path / "cache" / "file.bin"
    target.parent.mkdir()
    target.write_bytes(b"payl")  # a truncated earlier copy
    download_url(source.as_uri(), target, size=7)
    assert target.read_bytes() == b"payload"
    with pytest.raises(DownloadError, match="expected 9 bytes"):
        download_url(source.as_uri(), tmp_path / "other.bin", size=9)
    assert not (tmp_path / "other.bin").exists()


def test_a_download_the_validator_rejects_is_not_kept(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"<html>error</html>")
    target = tmp_path / "cache" / "model.pth"
    target.parent.mkdir()
    target.write_bytes(b"old")

    def validate(path):
        assert path.read_bytes() == b"<html>error</html>" and path != target
        raise ValueError("it is an HTML page.")

    with pytest.raises(
        DownloadError, match=r"did not give a usable file: it is an HTML page\. Nothing was kept"
    ):
        download_url(source.as_uri(), target, validate=validate, overwrite=True)
    assert target.read_bytes() == b"old" and os.listdir(target.parent) == ["model.pth"]
    download_url(source.as_uri(), target, validate=lambda path: None, overwrite=True)
    assert target.read_bytes() == b"<html>error</html>"


def test_a_write_killed_midway_leaves_a_part_file_that_the_next_write_removes(tmp_path):
    target = tmp_path / "adapters.safetensors"
    killed = (
        "import os, signal\n"
        "from terratorch_hsi_peft.utils.download import atomic_write\n"
        f"with atomic_write({str(target)!r}) as f:\n"
        "    f.write(b'half'); f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", killed], capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr
    (stale,) = os.listdir(tmp_path)
    assert stale.startswith(".adapters.safetensors.") and stale.endswith(".part")
    (tmp_path / ".other.bin.abcd1234.part").write_bytes(b"")  # another file's: not touched

    with atomic_write(target) as f:
        f.write(b"whole")
    assert sorted(os.listdir(tmp_path)) == [".other.bin.abcd1234.part", "adapters.safetensors"]
    assert target.read_bytes() == b"whole"


def test_a_write_in_progress_is_not_taken_for_stale(tmp_path):
    target = tmp_path / "map.npy"
    with atomic_write(target) as outer:
        outer.write(b"outer")
        with atomic_write(target) as inner:  # a second writer of the same file meanwhile
            inner.write(b"inner")
        assert target.read_bytes() == b"inner"
    assert target.read_bytes() == b"outer"
    assert os.listdir(tmp_path) == ["map.npy"]
