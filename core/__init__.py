"""unet3d core: the MLPerf 3D-UNet KiTS19 benchmark engine. Imports no Textual, no console code."""

__version__ = "0.1.0"
