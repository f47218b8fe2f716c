"""A seeded, procedurally generated "shapes world": coloured shapes on muted, cluttered backgrounds.

It stands in for real photos where no real CLIP weights can be had: the shipped tiny CLIP is
trained on its single-object crops, and its multi-object scenes (with exact ground-truth boxes)
measure the localizers. Every item is a pure function of ``(seed, index)``.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (235, 215, 30),
    "green": (40, 165, 55),
    "blue": (35, 75, 220),
    "purple": (145, 45, 195),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
CLASSES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLORS for s in SHAPES)
BACKGROUND = "background"
GROUP = "several objects"
PAIR_JOIN = " and "  # a "pair" crop's label: its two classes, "red circle and blue star"

CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}",
    "a {}",
    "a picture of a {}",
    "an image of a {}",
    "{}",
    "a photo of the {}",
    "a {} shape",
    "a small {}",
    "a large {}",
)
BACKGROUND_CAPTIONS: tuple[str, ...] = (
    "a photo of background",
    "background",
    "an empty background",
    "a photo of nothing",
    "a picture of an empty scene",
)
GENERIC_CAPTIONS: tuple[str, ...] = ("an object", "a shape", "a photo of an object", "a photo of a shape", "something")


@dataclass
class Scene:
    """A rendered scene: RGB image plus ground truth (``boxes`` is ``(N, 4)`` xyxy pixels)."""

    image: Image.Image
    boxes: np.ndarray
    labels: list[str] = field(default_factory=list)


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _muted_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A low-saturation colour, so that backgrounds never read as one of ``COLORS``."""
    h, s, v = rng.random(), rng.uniform(0.0, 0.22), rng.uniform(0.25, 0.95)
    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h, s, v))


def muted_background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Solid, gradient, stripe-texture or noise background in muted colours."""
    a = np.array(_muted_color(rng), np.float32)
    b = np.array(_muted_color(rng), np.float32)
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:
        t = np.zeros((height, width), np.float32)
    elif kind == 1:
        angle = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    elif kind == 2:
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 40)
        t = 0.5 + 0.5 * np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
        t *= rng.uniform(0.2, 0.6)
    else:
        coarse = rng.random((max(2, height // 16), max(2, width // 16))).astype(np.float32)
        t = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
    img = a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]
    img += rng.normal(0, rng.uniform(2, 12), img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def add_clutter(rng: np.random.Generator, img: Image.Image, count: int) -> None:
    """Thin muted lines, rings and dots: texture that is not an object."""
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for _ in range(count):
        color = _muted_color(rng)
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(2, max(3.0, min(w, h) * 0.08))
        kind = rng.integers(3)
        if kind == 0:
            x2, y2 = x + rng.normal(0, r * 3), y + rng.normal(0, r * 3)
            draw.line([(x, y), (x2, y2)], fill=color, width=int(rng.integers(1, 3)))
        elif kind == 1:
            draw.ellipse([x - r, y - r, x + r, y + r], outline=color, width=1)
        else:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=color)


def polygon(shape: str, cx: float, cy: float, size: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of ``shape`` whose unrotated extent is ``size`` pixels, rotated by ``angle``."""
    r = size / 2
    if shape == "circle":
        pts = [(r * math.cos(t), r * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 48, endpoint=False)]
    elif shape == "square":
        s = r * 0.82
        pts = [(-s, -s), (s, -s), (s, s), (-s, s)]
    elif shape == "triangle":
        pts = [(r * math.cos(t), r * math.sin(t)) for t in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    elif shape == "star":
        pts = [
            ((r if k % 2 == 0 else r * 0.42) * math.cos(-math.pi / 2 + k * math.pi / 5),
             (r if k % 2 == 0 else r * 0.42) * math.sin(-math.pi / 2 + k * math.pi / 5))
            for k in range(10)
        ]
    elif shape == "cross":
        a, b = r, r * 0.33
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b),
               (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in pts]


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int = 22) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _draw_object(
    rng: np.random.Generator, img: Image.Image, label: str, cx: float, cy: float, size: float
) -> np.ndarray:
    """Draw ``label`` ("colour shape") centred at (cx, cy); returns its visible xyxy box."""
    color_name, shape = label.split(" ")
    pts = polygon(shape, cx, cy, size, rng.uniform(0, 2 * math.pi))
    draw = ImageDraw.Draw(img)
    fill = _jitter(rng, COLORS[color_name])
    outline = tuple(int(c * 0.6) for c in fill) if rng.random() < 0.5 else None
    draw.polygon(pts, fill=fill, outline=outline)
    xy = np.array(pts)
    w, h = img.size
    x1, y1 = np.clip(xy.min(0), 0, [w, h])
    x2, y2 = np.clip(xy.max(0), 0, [w, h])
    return np.array([x1, y1, x2, y2], np.float32)


CROP_MIX: dict[str, float] = {"object": 0.65, "fragment": 0.15, "group": 0.12, "background": 0.08}


def _photo_background(rng: np.random.Generator, photos: list[Image.Image], side: int) -> Image.Image:
    """A ``side``-px square cut from one of ``photos`` at a random scale (0.5–2× ``side`` of the
    photo), grey photos tinted between two random colours."""
    photo = photos[int(rng.integers(len(photos)))]
    cut = int(side * rng.uniform(0.5, 2.0))
    if min(photo.size) < cut:
        fit = cut / min(photo.size)
        photo = photo.resize((max(cut, round(photo.width * fit)), max(cut, round(photo.height * fit))),
                             Image.Resampling.BILINEAR)
    x, y = int(rng.integers(photo.width - cut + 1)), int(rng.integers(photo.height - cut + 1))
    img = photo.crop((x, y, x + cut, y + cut)).resize((side, side), Image.Resampling.BILINEAR)
    if img.mode == "L":
        t = np.asarray(img, np.float32)[..., None] / 255
        dark = np.array(_muted_color(rng), np.float32)
        light = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.6, 1.0))) * 255
        img = Image.fromarray(np.clip(dark * (1 - t) + light * t, 0, 255).astype(np.uint8))
    return img


def render_crop(seed: int, index: int, size: int = 64, mix: dict[str, float] | None = None,
                photos: list[Image.Image] | None = None, photo_share: float = 0.5) -> tuple[Image.Image, str]:
    """One training/eval crop, rendered at 2–4× and downsampled as a window of a scene is.

    Its kind is drawn from ``mix`` (default ``CROP_MIX``), and so is its label:
    ``"object"`` — one whole shape ("red circle"); ``"fragment"`` — only part of a shape, or a
    close-up inside a large one (label: its colour, "red"); ``"group"`` — two or three shapes
    (``GROUP``); ``"pair"`` — two whole shapes of two classes, one in each half, labelled by both classes joined
    with ``PAIR_JOIN``; ``"background"`` — none (``BACKGROUND``). Fragments and groups teach the model
    that a window which does not frame exactly one whole object is not that object. With
    ``photos``, a ``photo_share`` of the crops has a cut of one of them as its background.
    """
    rng = _rng(seed, index, 0)
    mix = mix or CROP_MIX
    kinds = list(mix)
    kind = kinds[int(rng.choice(len(kinds), p=np.array([mix[k] for k in kinds]) / sum(mix.values())))]
    scale = int(rng.integers(2, 5))
    canvas = size * scale
    img = muted_background(rng, canvas, canvas)
    add_clutter(rng, img, int(rng.integers(0, 8)))
    photo_rng = _rng(seed, index, 5)
    if photos and photo_rng.random() < photo_share:
        img = _photo_background(photo_rng, photos, canvas)
    label = BACKGROUND
    if kind == "object":
        label = CLASSES[int(rng.integers(len(CLASSES)))]
        if rng.random() < 0.2:  # a partial neighbour at the crop's edge
            edge = rng.choice([-1, 1], 2) * canvas * rng.uniform(0.5, 0.65)
            _draw_object(rng, img, _random_class(rng), canvas / 2 + edge[0], canvas / 2 + edge[1],
                         canvas * rng.uniform(0.25, 0.45))
        obj = canvas * rng.uniform(0.35, 0.95)
        slack = max(canvas - obj, 0) / 2 + obj * 0.1
        _draw_object(rng, img, label, *(canvas / 2 + rng.uniform(-slack, slack, 2)), obj)
    elif kind == "fragment":
        label = _random_class(rng)
        if rng.random() < 0.6:  # cut by the crop's edge: 40-80 % of its width is outside
            obj = canvas * rng.uniform(0.5, 1.2)
            centre = canvas / 2 + rng.uniform(-0.3, 0.3, 2) * canvas
            axis = int(rng.integers(2))
            centre[axis] = canvas / 2 + rng.choice([-1, 1]) * (canvas / 2 + obj * rng.uniform(-0.1, 0.3))
        else:  # a close-up inside a large shape
            obj = canvas * rng.uniform(1.8, 3.5)
            centre = canvas / 2 + rng.uniform(-0.3, 0.3, 2) * obj
        _draw_object(rng, img, label, *centre, obj)
        label = label.split(" ")[0]
    elif kind == "group":
        label = GROUP
        for _ in range(int(rng.integers(2, 4))):
            obj = canvas * rng.uniform(0.25, 0.5)
            _draw_object(rng, img, _random_class(rng), *rng.uniform(obj / 2, canvas - obj / 2, 2), obj)
    elif kind == "pair":
        names = [CLASSES[int(k)] for k in rng.choice(len(CLASSES), 2, replace=False)]
        axis = int(rng.integers(2))
        for half, name in enumerate(names):
            obj = canvas * rng.uniform(0.25, 0.45)
            centre = rng.uniform(obj / 2, canvas - obj / 2, 2)
            centre[axis] = (half + 0.5) * canvas / 2 + rng.uniform(-0.05, 0.05) * canvas
            _draw_object(rng, img, name, *centre, obj)
        label = PAIR_JOIN.join(names)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * scale))
    return img.resize((size, size), Image.BOX), label


def _random_class(rng: np.random.Generator) -> str:
    return CLASSES[int(rng.integers(len(CLASSES)))]


def attributes(label: str) -> tuple[str | None, str | None]:
    """(colour, shape) a crop label asserts: "red circle" → both, "red" → colour, ``GROUP`` → neither."""
    if label in (GROUP, BACKGROUND):
        return None, None
    words = label.split(" ")
    return words[0], (words[1] if len(words) > 1 else None)


@dataclass(frozen=True)
class Caption:
    """A caption and what it asserts: ``colour``/``shape`` are ``None`` where the text leaves them open."""

    text: str
    colour: str | None
    shape: str | None
    background: bool = False

    @property
    def specificity(self) -> int:
        """How many attributes the caption names: 2 for "colour shape" and for background."""
        return 2 if self.background else (self.colour is not None) + (self.shape is not None)

    def matches(self, label: str) -> bool:
        """Whether this caption truly describes a crop labelled ``label`` (see ``render_crop``)."""
        if label == BACKGROUND or self.background:
            return label == BACKGROUND and self.background
        colour, shape = attributes(label)
        return self.colour in (None, colour) and self.shape in (None, shape)


def caption(label: str, rng: np.random.Generator) -> Caption:
    """A random true caption for a crop label: mostly as specific as the crop allows ("colour
    shape"), sometimes only the colour, only the shape or just "an object", so that generic
    prompts mean something to the model. A quarter get a made-up word the model learns to ignore."""
    colour, shape = attributes(label)
    pick = rng.random()
    if label == BACKGROUND:
        cap = Caption(_choice(rng, BACKGROUND_CAPTIONS), None, None, background=True)
    elif colour is None or pick < 0.1 or (shape is None and pick < 0.5):
        cap = Caption(_choice(rng, GENERIC_CAPTIONS), None, None)
    else:
        if shape is not None and pick < 0.2:
            colour = None
        elif pick < 0.3:
            shape = None
        phrase = f"{colour} {shape or _choice(rng, ('shape', 'object'))}" if colour else shape
        cap = Caption(_choice(rng, CAPTION_TEMPLATES).format(phrase), colour, shape)
    if rng.random() < 0.25:
        words = cap.text.split(" ")
        junk = "".join(chr(ord("a") + int(k)) for k in rng.integers(0, 26, int(rng.integers(3, 9))))
        words.insert(int(rng.integers(0, len(words) + 1)), junk)
        cap = Caption(" ".join(words), cap.colour, cap.shape, cap.background)
    return cap


def _choice(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def render_scene(
    seed: int,
    index: int,
    width: int = 640,
    height: int = 480,
    max_objects: int = 6,
    classes: tuple[str, ...] = CLASSES,
    min_objects: int = 0,
    sizes: tuple[float, float] = (24, 220),
) -> Scene:
    """A scene with ``min_objects``..``max_objects`` shapes of ``sizes`` px (at most 90 % of the
    shorter side) drawn from ``classes``; overlaps are bounded, so crowded scenes may hold fewer."""
    rng = _rng(seed, index, 1)
    img = muted_background(rng, width, height)
    add_clutter(rng, img, int(rng.integers(5, 30)))
    return _place_shapes(rng, img, max_objects, classes, min_objects, sizes)


def render_photo_scene(seed: int, index: int, photos: list[Image.Image], width: int = 512, height: int = 384,
                       max_objects: int = 6) -> Scene:
    """``render_scene``'s shapes on a random crop of one of ``photos`` (resized by 1–2x its
    fit), so the background is real clutter: edges, textures and objects of its own."""
    rng = _rng(seed, index, 4)
    photo = photos[int(rng.integers(len(photos)))]
    fit = max(width / photo.width, height / photo.height) * rng.uniform(1.0, 2.0)
    big = photo.resize((max(width, round(photo.width * fit)), max(height, round(photo.height * fit))),
                       Image.Resampling.BILINEAR)
    x, y = int(rng.integers(big.width - width + 1)), int(rng.integers(big.height - height + 1))
    return _place_shapes(rng, big.crop((x, y, x + width, y + height)).convert("RGB"), max_objects, CLASSES, 0,
                         (24, 220))


def _place_shapes(rng: np.random.Generator, img: Image.Image, max_objects: int, classes: tuple[str, ...],
                  min_objects: int, sizes: tuple[float, float]) -> Scene:
    width, height = img.size
    boxes: list[np.ndarray] = []
    labels: list[str] = []
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        for _attempt in range(20):
            size = min(float(np.exp(rng.uniform(*np.log(sizes)))), 0.9 * min(width, height))
            cx, cy = rng.uniform(size / 2, width - size / 2), rng.uniform(size / 2, height - size / 2)
            box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
            if all(_overlap_fraction(box, other) < 0.25 for other in boxes):
                label = classes[int(rng.integers(len(classes)))]
                boxes.append(_draw_object(rng, img, label, cx, cy, size))
                labels.append(label)
                break
    return Scene(img, np.array(boxes, np.float32).reshape(-1, 4), labels)


def _overlap_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection area over the smaller box's area, so a small shape is never hidden under a big one."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(iw * ih / max(smaller, 1e-6))


ALT_TEXT_TEMPLATES: tuple[str, ...] = (
    "a photo of {}",
    "{}",
    "a picture of {}",
    "an image of {}",
    "a photo showing {}",
)
ALT_TEXT_WORDS: tuple[str, ...] = ("and", "showing")


@dataclass(frozen=True)
class WindowCrop:
    """A square window cut from a scene as the localizers cut it, and the shapes it shows:
    ``names`` are the classes of shapes at least half visible in it (at most 3)."""

    image: Image.Image
    names: tuple[str, ...]


def render_window_crops(
    seed: int, index: int, size: int = 64, count: int = 8, framed: float = 0.5
) -> list[WindowCrop]:
    """``count`` windows of one scene (``render_scene``), resized to ``size`` px.

    A share ``framed`` of them frame one shape with some context, the rest are random windows of
    0.12–0.8 of the scene's shorter side. A shape counts as shown when at least half of its box is inside the window
    and it spans at least a tenth of the window, as people caption photos: half a cat is "a cat".
    """
    scene = render_scene(seed, index, 384, 288, max_objects=6, min_objects=1, sizes=(24, 200))
    rng = _rng(seed, index, 2)
    width, height = scene.image.size
    crops = []
    for k in range(count):
        if k >= round(framed * count) or not len(scene.boxes):
            side = float(np.exp(rng.uniform(np.log(0.12), np.log(0.8)))) * min(width, height)
            x, y = rng.uniform(0, width - side), rng.uniform(0, height - side)
        else:
            box = scene.boxes[int(rng.integers(len(scene.boxes)))]
            side = min(float((box[2:] - box[:2]).max() * rng.uniform(1.0, 2.2)), min(width, height))
            cx, cy = (box[:2] + box[2:]) / 2 + rng.uniform(-0.25, 0.25, 2) * side
            x, y = float(np.clip(cx - side / 2, 0, width - side)), float(np.clip(cy - side / 2, 0, height - side))
        window = np.array([x, y, x + side, y + side])
        names = [label for box, label in zip(scene.boxes, scene.labels) if _shown(box, window)]
        rng.shuffle(names)
        crop = scene.image.crop(tuple(int(round(v)) for v in window)).resize((size, size), Image.BOX)
        crops.append(WindowCrop(crop, tuple(names[:3])))
    return crops


def _shown(box: np.ndarray, window: np.ndarray) -> bool:
    iw = max(0.0, min(box[2], window[2]) - max(box[0], window[0]))
    ih = max(0.0, min(box[3], window[3]) - max(box[1], window[1]))
    area = max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-6)
    return iw * ih / area >= 0.5 and max(iw, ih) >= 0.1 * (window[2] - window[0])


def alt_text(names: tuple[str, ...], rng: np.random.Generator) -> str:
    """An alt-text-style caption naming every shape in ``names``, or a background caption."""
    if not names:
        return _choice(rng, BACKGROUND_CAPTIONS)
    phrases = [f"a {name}" for name in names]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return _choice(rng, ALT_TEXT_TEMPLATES).format(listed)


FILLS: tuple[str, ...] = ("flat", "stripes", "speckle", "shading")


def _textured_fill(rng: np.random.Generator, rgb: tuple[int, ...], width: int, height: int) -> np.ndarray:
    """An ``(H, W, 3)`` fill in one colour family: flat, stripes of light and dark tones, speckle
    or a light-to-dark shading, so that the shape is not one flat colour segment."""
    base = np.array(rgb, np.float32)
    kind = FILLS[int(rng.integers(len(FILLS)))]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    along = xx * math.cos(angle) + yy * math.sin(angle)
    if kind == "stripes":
        t = (np.sin(along * 2 * math.pi / rng.uniform(6, 18)) > 0).astype(np.float32)
        gain = 1 - rng.uniform(0.35, 0.55) * t
    elif kind == "speckle":
        gain = 1 - rng.uniform(0.2, 0.45) * rng.random((height, width)).astype(np.float32)
    elif kind == "shading":
        gain = 1 - rng.uniform(0.35, 0.55) * (along - along.min()) / max(float(np.ptp(along)), 1.0)
    else:
        gain = np.ones((height, width), np.float32)
    return np.clip(base[None, None] * gain[..., None], 0, 255)


def render_hard_scene(seed: int, index: int, width: int = 512, height: int = 384, max_objects: int = 6) -> Scene:
    """A harder scene: 1..``max_objects`` shapes of 30 px to 60 % of the shorter side, textured
    fills (stripes, speckle, shading) on most, several instances of one class, shapes touching and
    partly hiding each other (each stays at least 60 % visible). Boxes frame the visible part."""
    rng = _rng(seed, index, 3)
    img = muted_background(rng, width, height)
    add_clutter(rng, img, int(rng.integers(10, 40)))
    canvas = np.asarray(img, np.float32).copy()
    owner = np.full((height, width), -1, np.int64)
    labels: list[str] = []
    areas: list[int] = []
    repeat = CLASSES[int(rng.integers(len(CLASSES)))]
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = repeat if rng.random() < 0.3 else CLASSES[int(rng.integers(len(CLASSES)))]
        for _attempt in range(20):
            size = float(np.exp(rng.uniform(np.log(30), np.log(0.6 * min(width, height)))))
            cx, cy = rng.uniform(size * 0.3, width - size * 0.3), rng.uniform(size * 0.3, height - size * 0.3)
            mask_img = Image.new("L", (width, height), 0)
            outline = polygon(label.split(" ")[1], cx, cy, size, rng.uniform(0, 2 * math.pi))
            ImageDraw.Draw(mask_img).polygon(outline, fill=255)
            mask = np.asarray(mask_img) > 127
            if not mask.any():
                continue
            trial = owner.copy()
            trial[mask] = len(labels)
            visible = [int((trial == j).sum()) / max(areas[j], 1) for j in range(len(labels))]
            if all(v >= 0.6 for v in visible):
                fill = _textured_fill(rng, _jitter(rng, COLORS[label.split(" ")[0]]), width, height)
                canvas[mask] = fill[mask]
                owner = trial
                labels.append(label)
                areas.append(int(mask.sum()))
                break
    boxes = []
    for j in range(len(labels)):
        ys, xs = np.nonzero(owner == j)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return Scene(image, np.array(boxes, np.float32).reshape(-1, 4), labels)
