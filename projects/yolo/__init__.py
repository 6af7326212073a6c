"""YOLO detectors on ultralytics, tracked in MLflow and exported to ONNX: safety, visitor and custom datasets.

mlflow run . -e safety_detection --env-manager local -P epochs=3 -P imgsz=320
"""
