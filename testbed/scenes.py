"""The testbed's world: synthetic scenes with captions, and a reader that says what a picture shows.

Pure (numpy only, no ComfyUI), so the generator, the reader and their tests run anywhere.

A scene is a 16×16 picture: a background (grass, sand, sky), one shape (circle, square, triangle) in one of four
colours, small or big, on the left or the right, and, in most scenes, a black hat on top of the shape. The hat is
the removable object: like glasses in photos of people, it is there in 45 % of the pictures whether or not the
caption says so, and captions rarely mention it. One caption in four is just "a hat" (so that eps("a hat") knows
what a hat is, as a real model knows its nouns) and some are empty (for classifier-free guidance).

The picture is the latent: channels R, G, B in [-1, 1] and a fourth channel with their mean (a real latent's
channels are correlated too). `testbed/model.py` decodes it with a fixed upsampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 16
BACKGROUNDS = {"grass": (0.20, 0.55, 0.20), "sand": (0.85, 0.75, 0.55), "sky": (0.55, 0.75, 0.95)}
COLOURS = {"red": (0.90, 0.12, 0.12), "blue": (0.15, 0.25, 0.85), "yellow": (0.95, 0.85, 0.10),
           "purple": (0.60, 0.20, 0.70)}
HAT_COLOUR = (0.05, 0.05, 0.05)
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 5, "big": 7}
POSITIONS = ("left", "right")
HAT_TEXT = "a hat"

# The data's statistics; the model card (testbed/MODEL_CARD.md) quotes them.
HAT_RATE = 0.45            # scenes with a hat, whatever the caption says
HAT_MENTION_RATE = 0.10    # of hat scenes with a descriptive caption, those whose caption says "with a hat"
HAT_ONLY_CAPTIONS = 0.25   # captions that are just "a hat" (the scene has a hat)
EMPTY_CAPTIONS = 0.12      # empty captions, for classifier-free guidance
ATTRIBUTE_DROP = 0.3       # each of colour, size, shape, background, position left out of a descriptive caption


@dataclass(frozen=True)
class Scene:
    background: str
    colour: str
    shape: str
    size: str
    position: str
    hat: bool
    x: int   # column of the shape's centre
    y: int   # row of the shape's bottom

    def caption(self, named: frozenset = frozenset({"colour", "size", "shape", "background", "position"}),
                mention_hat: bool = False) -> str:
        """'a big red circle with a hat on grass, left' with only the `named` attributes."""
        words = ["a"]
        if "size" in named:
            words.append(self.size)
        if "colour" in named:
            words.append(self.colour)
        words.append(self.shape if "shape" in named else "shape")
        if mention_hat:
            words.append("with a hat")
        if "background" in named:
            words.append(f"on {self.background}")
        text = " ".join(words)
        return f"{text}, {self.position}" if "position" in named else text


def random_scene(rng: np.random.Generator, hat: bool | None = None) -> Scene:
    size = str(rng.choice(list(SIZES)))
    position = str(rng.choice(POSITIONS))
    centre = 4 if position == "left" else 11
    return Scene(background=str(rng.choice(list(BACKGROUNDS))), colour=str(rng.choice(list(COLOURS))),
                 shape=str(rng.choice(SHAPES)), size=size, position=position,
                 hat=bool(rng.random() < HAT_RATE) if hat is None else hat,
                 x=centre + int(rng.integers(0, 2)), y=12 + int(rng.integers(0, 3)))


def random_caption(rng: np.random.Generator, scene: Scene) -> tuple[Scene, str]:
    """A caption for `scene` as the data has them; "a hat" captions give the scene a hat."""
    roll = rng.random()
    if roll < EMPTY_CAPTIONS:
        return scene, ""
    if roll < EMPTY_CAPTIONS + HAT_ONLY_CAPTIONS:
        return _with_hat(scene), HAT_TEXT
    named = frozenset(name for name in ("colour", "size", "shape", "background", "position")
                      if rng.random() >= ATTRIBUTE_DROP)
    return scene, scene.caption(named, mention_hat=scene.hat and rng.random() < HAT_MENTION_RATE)


def _with_hat(scene: Scene) -> Scene:
    return Scene(**{**scene.__dict__, "hat": True})


def shape_mask(shape: str, size: str, x: int, y: int) -> np.ndarray:
    """Boolean SIZE×SIZE mask of a shape whose bottom row is y and centre column x."""
    width = SIZES[size]
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    top = y - width + 1
    inside_box = (rows >= top) & (rows <= y) & (np.abs(cols - x) <= width // 2)
    if shape == "square":
        return inside_box
    if shape == "circle":
        centre_row = y - width // 2
        return (rows - centre_row) ** 2 + (cols - x) ** 2 <= (width / 2) ** 2
    # triangle: one pixel at the top, the full width at the bottom
    half_width = (rows - top) * (width // 2) / max(width - 1, 1)
    return inside_box & (np.abs(cols - x) <= half_width + 0.5)


def hat_mask(size: str, x: int, y: int) -> np.ndarray:
    """A brim two pixels wider than the shape, on the row above it, and a crown two rows high above the brim."""
    width = SIZES[size]
    top = y - width + 1
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    brim = (rows == top - 1) & (np.abs(cols - x) <= width // 2 + 1)
    crown = (rows >= top - 3) & (rows <= top - 2) & (np.abs(cols - x) <= width // 2 - 1)
    return brim | crown


def render(scene: Scene) -> np.ndarray:
    """The scene as an RGB picture, float32 (SIZE, SIZE, 3) in [0, 1]."""
    picture = np.empty((SIZE, SIZE, 3), dtype=np.float32)
    picture[:] = BACKGROUNDS[scene.background]
    picture[shape_mask(scene.shape, scene.size, scene.x, scene.y)] = COLOURS[scene.colour]
    if scene.hat:
        picture[hat_mask(scene.size, scene.x, scene.y)] = HAT_COLOUR
    return picture


def to_latent(picture: np.ndarray) -> np.ndarray:
    """(SIZE, SIZE, 3) in [0, 1] → (4, SIZE, SIZE) in [-1, 1]: R, G, B and their mean."""
    rgb = picture.transpose(2, 0, 1) * 2.0 - 1.0
    return np.concatenate([rgb, rgb.mean(axis=0, keepdims=True)]).astype(np.float32)


def training_batch(rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, list[str]]:
    """`batch_size` latents (B, 4, SIZE, SIZE) and their captions."""
    latents, captions = [], []
    for _ in range(batch_size):
        scene, caption = random_caption(rng, random_scene(rng))
        latents.append(to_latent(render(scene)))
        captions.append(caption)
    return np.stack(latents), captions


# ---- the reader ----

_PALETTE_NAMES = [*(("background", name) for name in BACKGROUNDS), *(("colour", name) for name in COLOURS),
                  ("hat", "hat")]
_PALETTE = np.array([*BACKGROUNDS.values(), *COLOURS.values(), HAT_COLOUR], dtype=np.float32)
MIN_SHAPE_PIXELS = 8   # fewer pixels of one colour than this is no shape
MIN_HAT_PIXELS = 5     # the smallest hat has 10


@dataclass(frozen=True)
class Reading:
    """What a picture shows; None where it shows no such thing."""
    background: str
    colour: str | None
    shape: str | None
    size: str | None
    position: str | None
    hat: bool
    hat_pixels: np.ndarray  # boolean mask of the pixels read as hat


def read(picture: np.ndarray) -> Reading:
    """Read a (SIZE, SIZE, 3) picture in [0, 1]: each pixel to its nearest palette colour, then counts and shapes."""
    distances = ((picture[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(-1)
    nearest = distances.argmin(-1)
    counts = np.bincount(nearest.ravel(), minlength=len(_PALETTE))
    kinds = [kind for kind, _ in _PALETTE_NAMES]
    names = [name for _, name in _PALETTE_NAMES]
    background_ids = [i for i, kind in enumerate(kinds) if kind == "background"]
    colour_ids = [i for i, kind in enumerate(kinds) if kind == "colour"]
    hat_id = kinds.index("hat")
    background = names[max(background_ids, key=lambda i: counts[i])]
    hat_pixels = nearest == hat_id
    colour_id = max(colour_ids, key=lambda i: counts[i])
    if counts[colour_id] < MIN_SHAPE_PIXELS:
        return Reading(background, None, None, None, None, bool(hat_pixels.sum() >= MIN_HAT_PIXELS), hat_pixels)
    shape_pixels = nearest == colour_id
    rows, cols = np.nonzero(shape_pixels)
    size = "big" if rows.max() - rows.min() + 1 >= 6 else "small"
    x = int(round(float(np.median(cols))))
    y = int(rows.max())
    shape = max(SHAPES, key=lambda s: _overlap(shape_mask(s, size, x, y), shape_pixels))
    position = "left" if cols.mean() < SIZE / 2 else "right"
    return Reading(background, names[colour_id], shape, size, position,
                   bool(hat_pixels.sum() >= MIN_HAT_PIXELS), hat_pixels)


def _overlap(template: np.ndarray, found: np.ndarray) -> float:
    return float((template & found).sum()) / float((template | found).sum())
