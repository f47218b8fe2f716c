"""The shapes world is deterministic and covers what training and evaluation need."""

import numpy as np

from fiftyone_clip_zeroshot.shapes.world import BACKGROUND, CLASSES, COLORS, SHAPES, caption, render_crop, render_scene


def test_enough_colours_and_shapes():
    assert len(COLORS) >= 6 and len(SHAPES) >= 5 and len(CLASSES) == len(COLORS) * len(SHAPES)


def test_crops_are_deterministic_and_varied():
    a, label_a = render_crop(5, 17)
    b, label_b = render_crop(5, 17)
    assert label_a == label_b and np.array_equal(np.asarray(a), np.asarray(b))
    labels = {render_crop(5, i)[1] for i in range(400)}
    assert BACKGROUND in labels and len(labels) > 25
    assert render_crop(5, 0)[0].size == (64, 64)


def test_scenes_have_boxes_inside_the_image_and_sizes_in_range():
    objects = 0
    for i in range(30):
        scene = render_scene(9, i, 512, 384)
        assert scene.image.size == (512, 384)
        assert len(scene.labels) == len(scene.boxes) <= 6
        if len(scene.boxes):
            assert (scene.boxes[:, :2] >= 0).all()
            assert (scene.boxes[:, 2] <= 512).all() and (scene.boxes[:, 3] <= 384).all()
            sides = np.maximum(scene.boxes[:, 2] - scene.boxes[:, 0], scene.boxes[:, 3] - scene.boxes[:, 1])
            assert sides.min() >= 14 and sides.max() <= 221  # 24-220 px objects; triangles are shorter than wide
        objects += len(scene.labels)
    assert objects > 50
    assert np.array_equal(np.asarray(render_scene(9, 3).image), np.asarray(render_scene(9, 3).image))


def test_captions_describe_their_crop():
    rng = np.random.default_rng(0)
    for label in ("red circle", "blue star", BACKGROUND):
        for _ in range(50):
            assert caption(label, rng).matches(label)
    assert not caption("red circle", np.random.default_rng(1)).matches(BACKGROUND)


def test_hard_scenes_frame_the_visible_part_of_textured_overlapping_shapes():
    from fiftyone_clip_zeroshot.shapes.world import render_hard_scene

    scenes = [render_hard_scene(8, i) for i in range(12)]
    labels = [label for s in scenes for label in s.labels]
    assert all(label in CLASSES for label in labels) and len(labels) >= 24
    assert any(len(set(s.labels)) < len(s.labels) for s in scenes)  # several instances of one class
    for scene in scenes:
        width, height = scene.image.size
        assert (scene.boxes[:, :2] >= 0).all()
        assert (scene.boxes[:, 2] <= width).all() and (scene.boxes[:, 3] <= height).all()
        pixels = np.asarray(scene.image).astype(float)
        for x1, y1, x2, y2 in scene.boxes.astype(int):
            assert pixels[y1:y2, x1:x2].std() > 0  # the box shows something, not a flat background
    sides = np.concatenate([s.boxes[:, 2:] - s.boxes[:, :2] for s in scenes])
    assert sides.max() >= 150  # large shapes, up to 60 % of the short side


def test_photo_backed_crops_keep_their_labels_and_train_on_photos_no_benchmark_uses():
    from fiftyone_clip_zeroshot.photos import background_images, training_backgrounds

    def thumbs(images):
        return {np.asarray(image.convert("RGB").resize((32, 32))).tobytes() for image in images}

    photos = training_backgrounds()
    assert len(photos) >= 10 and not thumbs(photos) & thumbs(background_images())
    for i in range(20):
        flat, label = render_crop(5, i)
        on_photo, photo_label = render_crop(5, i, photos=photos, photo_share=1.0)
        assert photo_label == label and on_photo.size == flat.size == (64, 64) and on_photo.mode == "RGB"
        assert not np.array_equal(np.asarray(flat), np.asarray(on_photo))
        assert np.array_equal(np.asarray(on_photo), np.asarray(render_crop(5, i, photos=photos, photo_share=1.0)[0]))
    unchanged = render_crop(5, 3, photos=photos, photo_share=0.0)[0]
    assert np.array_equal(np.asarray(unchanged), np.asarray(render_crop(5, 3)[0]))
