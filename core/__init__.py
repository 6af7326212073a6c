"""The bottom of the house: what training, serving, the registry, data tools, jobs and benches all share.

    python -c "from core.contract import SegmentationContract; print(SegmentationContract.example().to_metadata())"

`core` imports no other kiln package. It holds the model contract (`contract.py`), the numpy pre-processing it
declares (`preprocess.py`), the one error type (`errors.py`) and the one way to read settings from the
environment (`settings.py`).
"""
