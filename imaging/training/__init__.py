"""Training: recipes, datasets from an archive manifest, transfer learning, the fit loop.

Modules (each imported where it is used; importing this package loads no torch):

- ``recipe``: ``TrainingRecipe`` from ``configs/training/*.yaml`` (``load_recipe``).
- ``data``: manifest rows -> training records -> cached MONAI datasets and loaders.
- ``transfer``: freeze/unfreeze the backbone, discriminative parameter groups,
  backbone weights from a training checkpoint.
- ``objectives``: losses and validation metrics per task.
- ``loop``: ``fit`` with checkpoints, resume, TensorBoard, progress, early stopping.
- ``predictions``: ``predict_dataset`` (eval mode, inference mode).
- ``run``: ``train_from_recipe`` ties them together (``mmdx train``).
"""
