"""Small helpers shared by the backbone and the datasets."""

from terratorch_hsi_peft.utils.download import DownloadError, atomic_write, download_url, sha256sum

__all__ = ["DownloadError", "atomic_write", "download_url", "sha256sum"]
