"""FiftyOne glue, in wings: ``runs`` (jobs, ``detect``, run records, claims and shards, labels),
``fo_models`` (``apply_model`` and embeddings models), ``curation`` (curate, review decisions,
calibrate) and ``object_search`` (candidates, the object index, ``search``). ``fo_private`` holds
what we read of FiftyOne's internals; the modules beside it keep old import paths for one release.

Imports: core, labeling
"""
