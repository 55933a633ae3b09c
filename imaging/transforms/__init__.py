"""MONAI preprocessing presets (MRI, echo) and our own transforms in MONAI's pattern."""
