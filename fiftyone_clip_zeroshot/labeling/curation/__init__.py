"""Turning auto-labels into ground truth: verify, classify, evaluate and tag (``curate``), review
decisions (accept, reject, relabel, promote) and thresholds learnt from them (``calibrate``).

Imports: core, labeling.runs, labeling.fo_private
"""
