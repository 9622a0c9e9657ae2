"""Start-up of the tests' ``terratorch`` subprocesses: what the installed
``terratorch_hsi_peft_autoload.pth`` does, for a source tree that is only on ``PYTHONPATH`` or
whose environment was installed before the ``.pth`` existed (installing twice is a no-op)."""

import terratorch_hsi_peft_autoload

terratorch_hsi_peft_autoload.install()
