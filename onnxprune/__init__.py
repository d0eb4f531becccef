"""onnxprune: structured pruning, reconstruction and INT8 QDQ for exported ONNX models.

``onnxprune.compress(model, target=..., calib=..., **options)`` (``api``) is the Python entry point; the
``onnxprune`` command (``cli``) is the same pipeline.
"""

from ._version import __version__
from .api import CompressResult, compress

__all__ = ["CompressResult", "__version__", "compress"]
