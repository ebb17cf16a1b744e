"""Export of compressed models to formats other runtimes load (ONNX)."""

from prunekit.export.onnx import OnnxRunner, export_onnx, max_difference, sample_inputs, time_against_torch

__all__ = ["OnnxRunner", "export_onnx", "max_difference", "sample_inputs", "time_against_torch"]
