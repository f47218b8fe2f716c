"""The quality meter's pure parts: each false positive at IoU 0.5 gets one kind."""

import numpy as np
import supervision as sv

from fiftyone_clip_zeroshot.core.quality import false_positive_kinds

CIRCLE, STAR = 0, 1
TRUTH = sv.Detections(xyxy=np.array([[100, 100, 200, 200], [300, 100, 340, 140]], float),
                      class_id=np.array([CIRCLE, STAR]))


def _boxes(*rows: tuple[list[float], int, float]) -> sv.Detections:
    return sv.Detections(xyxy=np.array([r[0] for r in rows], float), class_id=np.array([r[1] for r in rows]),
                         confidence=np.array([r[2] for r in rows]))


def test_each_false_positive_gets_one_kind_and_a_true_box_none():
    predictions = _boxes(
        ([100, 100, 200, 200], CIRCLE, 0.9),  # the circle: a true positive
        ([102, 101, 199, 201], CIRCLE, 0.8),  # the circle again: a duplicate
        ([60, 60, 260, 260], CIRCLE, 0.7),  # holds the circle, IoU 0.25: loose
        ([100, 100, 150, 150], CIRCLE, 0.6),  # a quarter of the circle: partial
        ([300, 100, 340, 140], CIRCLE, 0.5),  # the star called a circle: wrong class
        ([400, 300, 450, 350], STAR, 0.4),  # nothing there: background
    )
    kinds = false_positive_kinds(predictions, TRUTH)
    assert kinds == {"duplicate": 1, "loose": 1, "partial": 1, "wrong class": 1, "background": 1}


def test_the_best_box_of_a_class_takes_the_object_whatever_the_order_given():
    predictions = _boxes(([60, 60, 260, 260], CIRCLE, 0.2), ([101, 101, 200, 200], CIRCLE, 0.9))
    assert false_positive_kinds(predictions, TRUTH) == {"loose": 1}
