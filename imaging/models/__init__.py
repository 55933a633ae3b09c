"""Networks as data: model configurations, one factory, a weights registry.

``imaging.models.factory.create_model(name, pretrained=KEY_OR_PATH)`` builds a network
from ``configs/models/NAME.yaml``; ``imaging.models.weights`` verifies and remaps
MedicalNet, Kinetics-400 and mmdx checkpoints. Importing this package imports no torch.
"""
