"""Lightning callbacks of the plugin; naming any of them by ``class_path`` imports the plugin."""

from terratorch_hsi_peft.callbacks.adapter_checkpoint import AdapterCheckpoint
from terratorch_hsi_peft.callbacks.load_plugin import LoadPlugin
from terratorch_hsi_peft.callbacks.merged_predict import MergeAdaptersForPredict

__all__ = ["AdapterCheckpoint", "LoadPlugin", "MergeAdaptersForPredict"]
