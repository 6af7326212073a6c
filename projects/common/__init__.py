"""Pieces every kiln model family shares: config resolution, tracking, checkpoints, the fit loop, ONNX.

Each family's `train.py` builds its model and data, then hands them to these modules, so that tracking,
resume and export behave the same for every entry point.
"""
