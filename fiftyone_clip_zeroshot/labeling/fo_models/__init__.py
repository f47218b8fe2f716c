"""FiftyOne models: the ``apply_model`` detection model, its DataLoader variant and factory, and the
embeddings model that ``compute_similarity`` and ``compute_embeddings`` load by zoo name.

Imports: core, labeling.runs
"""
