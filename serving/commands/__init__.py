"""The ``mmdx`` subcommands, one module per area; ``serving.cli`` registers them.

Each command imports its heavy libraries inside the function, so ``mmdx --help``
answers at once.
"""
