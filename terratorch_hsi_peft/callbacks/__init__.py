"""Lightning callbacks of the plugin; naming any of them by ``class_path`` imports the plugin."""

from terratorch_hsi_peft.callbacks.load_plugin import LoadPlugin

__all__ = ["LoadPlugin"]
