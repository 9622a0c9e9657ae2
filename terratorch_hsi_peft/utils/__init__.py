"""Small helpers used across the package.

- :mod:`~terratorch_hsi_peft.utils.download`: checked downloads (weights, scenes) and atomic
  file writes.
- :mod:`~terratorch_hsi_peft.utils.cli_values`: typed values from dotted ``model_args``
  overrides on the command line (the factories and backbones).
- :mod:`~terratorch_hsi_peft.utils.finite`: refusing weights that hold NaN or Inf (adapter
  files, encoder exports, checkpoint loading).
"""

from terratorch_hsi_peft.utils.download import DownloadError, atomic_write, download_url, sha256sum

__all__ = ["DownloadError", "atomic_write", "download_url", "sha256sum"]
