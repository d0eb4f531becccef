"""onnxprune: structured pruning, reconstruction and INT8 QDQ for exported ONNX models."""

__version__ = "0.1.0"
