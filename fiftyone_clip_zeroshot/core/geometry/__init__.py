"""Pixels and boxes, without a model: images, window grids, region proposals, box extraction from
maps, and the objectness of a box.

Imports: core.errors, core.options, core.vocabulary
"""
