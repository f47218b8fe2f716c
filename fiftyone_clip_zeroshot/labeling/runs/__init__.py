"""Runs over collections: the job that walks a collection in chunks, ``detect``, its run record,
claims and shards for many workers, and the labels it writes.

Imports: core, labeling.fo_private
"""
