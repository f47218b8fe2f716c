"""Loading CLIP-family models: the CLIP wrapper and its loader, OpenCLIP checkpoints, each family's
scoring meaning, prompt templates, and batched encoding with its out-of-memory back-off.

Imports: core.errors
"""
