"""Objects by text: class-agnostic candidates stored per sample, their embeddings streamed into a
brain similarity index, and ``search`` that re-ranks the index's nearest patches.

Imports: core, labeling.runs, labeling.fo_models, labeling.fo_private
"""
