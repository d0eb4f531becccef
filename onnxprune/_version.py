"""The package version (one place: pyproject.toml reads the same number)."""

__version__ = "0.1.0"


def versions() -> dict:
    """The versions a report records: onnxprune and the libraries that computed it."""
    import numpy as np
    import onnx
    import onnxruntime

    return {
        "onnxprune": __version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }
