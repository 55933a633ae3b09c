"""Running a bundle on one input: decoding what a path holds (``inputs``).

:func:`imaging.predict.predict_path` is the entry point; importing this package loads
no torch.
"""
