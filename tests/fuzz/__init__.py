"""Mutation fuzzing of the parsers that face the network: DICOM reader, series assembler,
cine decoder and the STOW-RS multipart reader (``make fuzz`` runs it longer)."""
