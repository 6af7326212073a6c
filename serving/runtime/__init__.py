"""The model runtime: the predictor (one ONNX version with its task's pre- and post-processing), image decoding,
tensors, pictures, onnxruntime session options and the footprint profiler. Imports nothing above it in serving/."""
