"""A callback whose only job is to make jsonargparse import the plugin."""

from lightning.pytorch.callbacks import Callback


class LoadPlugin(Callback):
    """Registers the plugin's backbones and model factory with TerraTorch; does nothing in training.

    TerraTorch discovers no plugins by itself: a component registered by a package exists only once
    that package is imported. The installed plugin is imported automatically once TerraTorch is
    (see ``terratorch_hsi_peft_autoload``); where that is switched off
    (``TERRATORCH_HSI_PEFT_AUTOLOAD=0``) or the package is not installed (a source tree on
    ``PYTHONPATH``), every class of this plugin named by ``class_path`` in a YAML makes jsonargparse
    import the package while it parses the config. A pipeline that names none of them adds this
    one::

        trainer:
          callbacks:
            - class_path: terratorch_hsi_peft.callbacks.LoadPlugin
    """
