"""The plugin registers its documented names with TerraTorch, exactly once."""

import pytest
from terratorch.registry import TERRATORCH_BACKBONE_REGISTRY

from terratorch_hsi_peft import registry

pytestmark = pytest.mark.compat


def test_register_once_refuses_foreign_clash():
    def spectralgpt_clash():  # a component registered by someone else under a plugin name
        return None

    TERRATORCH_BACKBONE_REGISTRY.register(spectralgpt_clash)
    try:

        def spectralgpt_clash():
            return None

        spectralgpt_clash.__qualname__ = "other.spectralgpt_clash"
        with pytest.raises(RuntimeError, match="will not overwrite"):
            registry.register_backbone(spectralgpt_clash)
    finally:
        TERRATORCH_BACKBONE_REGISTRY._registry.pop("spectralgpt_clash")
