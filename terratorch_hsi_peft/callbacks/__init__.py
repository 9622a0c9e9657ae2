"""Lightning callbacks of the plugin; naming any of them by ``class_path`` imports the plugin."""

from terratorch_hsi_peft.callbacks.adapter_checkpoint import AdapterCheckpoint
from terratorch_hsi_peft.callbacks.class_map_writer import ClassMapWriter
from terratorch_hsi_peft.callbacks.class_weights import BalancedClassWeights
from terratorch_hsi_peft.callbacks.encoder_export import EncoderExport
from terratorch_hsi_peft.callbacks.geotiff_map_writer import GeoTiffMapWriter
from terratorch_hsi_peft.callbacks.load_plugin import LoadPlugin
from terratorch_hsi_peft.callbacks.merged_predict import MergeAdaptersForPredict
from terratorch_hsi_peft.callbacks.metrics import HyperspectralMetrics

__all__ = [
    "AdapterCheckpoint",
    "BalancedClassWeights",
    "ClassMapWriter",
    "EncoderExport",
    "GeoTiffMapWriter",
    "HyperspectralMetrics",
    "LoadPlugin",
    "MergeAdaptersForPredict",
]
