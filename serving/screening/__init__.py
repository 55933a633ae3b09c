"""Batch retrospective screening: ``mmdx screen`` on Ray Data, resumable, with a report.

:func:`serving.screening.run.run_screen` is the entry point the command line and the
notebook call; :mod:`~serving.screening.inputs` finds the studies of an input,
:mod:`~serving.screening.stages` decodes and classifies them (plain Python, run by
:mod:`~serving.screening.ray_pipeline` on Ray Data), and
:mod:`~serving.screening.results_store` appends their result rows as Parquet parts.
"""
