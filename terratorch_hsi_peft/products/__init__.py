"""Hyperspectral sensor products on disk (ENVI, GeoTIFF, EMIT, EnMAP, PRISMA), read lazily."""

from terratorch_hsi_peft.products.base import ProductMetadata, SensorProduct, Window

__all__ = ["ProductMetadata", "SensorProduct", "Window"]
