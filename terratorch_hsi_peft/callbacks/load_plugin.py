"""A callback whose only job is to make jsonargparse import the plugin."""

from lightning.pytorch.callbacks import Callback


class LoadPlugin(Callback):
    """Registers the plugin's backbones and model factory with TerraTorch; does nothing in training.

    TerraTorch discovers no plugins by itself: a component registered by a package exists only once
    that package is imported. Every class of this plugin named by ``class_path`` in a YAML makes
    jsonargparse import the package while it parses the config, before any model is built. The
    plugin's datamodules and callbacks do that as a side effect; a pipeline that uses none of them
    (its own datamodule, full fine-tuning) adds this one::

        trainer:
          callbacks:
            - class_path: terratorch_hsi_peft.callbacks.LoadPlugin
    """
