"""Procedurally generated, CMP-Facades-like paired images (labels <-> photo), fully offline.

The pix2pix paper (Isola et al. 2017) trains ``labels -> photo`` on CMP Facades (Tyleček &
Šára 2013): rectified building fronts whose semantic label maps are painted in a fixed
12-colour palette. This module synthesises data of the same kind so that the package can train,
test and demo without any download:

* ``image_b`` is a label map painted with :data:`PALETTE` (one exact RGB colour per class).
* ``image_a`` is a "photo" rendered from that label map with textures, shadows, lighting, blur
  and noise. Appearance is a deterministic function of the layout, i.e. of what the label map
  shows, so that a labels -> photo model can learn it (see :func:`render_photo`):

  - the wall material (cream or ochre plaster, limestone ashlar, grey render, buff brick) is
    chosen by :func:`choose_material` from the pilasters, shutters, shop front and number of
    floors; trim (cornices, sills, moldings, decorations, pillars) is a light stone;
  - every other class has one fixed colour: anthracite window frames, dark glass, dark wooden
    doors, black iron balconies, green shutters beside the windows but brown roller blinds over
    them (both are ``blind`` in the label map: only the arrangement tells them apart), a pale
    blue sky, hazy neighbours and a pale pavement;
  - spatial effects follow the geometry: glass reflects more sky on higher floors and towards
    the top of each pane, with a diagonal glint; raised elements (cornices, sills, balconies,
    moldings) cast shadows down and to the right from a fixed sun and have lit top and dark
    bottom edges; a fixed light gradient and vignette, and a darker ground floor.

  So it is not a per-class recolouring: the same class looks different depending on its
  surroundings (material, floor, shadows, frames and mullions inside the ``window`` class).
  Only a small residual is random: texture phases (plaster stains, brick tones, clouds), an
  exposure / white-balance jitter of a few percent and sensor noise.

Everything is vectorised numpy (plus Pillow for PNG encoding and a 3x3 blur) and a pure
function of ``(config seed, split, index)``: preparing twice stores byte-identical PNGs. (The
``.array_record`` files themselves can differ between processes: protobuf may serialise a
tf.Example's feature map in another order. Compare records, not file hashes.)

The builder registers itself on import as ``synthetic_facades`` and defaults to the
``array_record`` file format so that preparing and reading never needs TensorFlow::

    import tensorflow_datasets as tfds
    import pix2pix_jax.datasets.synthetic_facades  # noqa: F401  (registers the builder)

    builder = tfds.builder('synthetic_facades/res64', data_dir='/tmp/tfds')
    builder.download_and_prepare(file_format='array_record')
    train = builder.as_data_source()['train']
    example = train[0]  # {'image_a': uint8[64, 64, 3], 'image_b': uint8[64, 64, 3], 'index': 0}
"""

import dataclasses
import io
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageFilter

# --------------------------------------------------------------------------------------------
# Label set and palette.
# --------------------------------------------------------------------------------------------

#: CMP Facades classes, in the dataset's label order (label id = position + 1 in CMP).
CLASS_NAMES: tuple[str, ...] = (
    "background",
    "facade",
    "window",
    "door",
    "cornice",
    "sill",
    "balcony",
    "blind",
    "deco",
    "molding",
    "pillar",
    "shop",
)

#: RGB colour of each class in ``image_b``. The official pix2pix ``facades`` B images paint the
#: 12 CMP labels with a 12-step "jet" colour map (dark blue background, blue wall, light-blue
#: windows, ..., red pillars, dark-red shops); these are that map's colours quantised to
#: multiples of 85, in CMP label order. Exact values matter: PNG is lossless, so every pixel
#: of a prepared label map is exactly one of these rows.
PALETTE: np.ndarray = np.array(
    [
        (0, 0, 170),  # background (sky, neighbours, street)
        (0, 0, 255),  # facade (wall)
        (0, 85, 255),  # window
        (0, 170, 255),  # door
        (0, 255, 255),  # cornice
        (85, 255, 170),  # sill
        (170, 255, 85),  # balcony
        (255, 255, 0),  # blind / shutter
        (255, 170, 0),  # deco
        (255, 85, 0),  # molding
        (255, 0, 0),  # pillar
        (170, 0, 0),  # shop
    ],
    dtype=np.uint8,
)
PALETTE.setflags(write=False)

(
    BACKGROUND,
    FACADE,
    WINDOW,
    DOOR,
    CORNICE,
    SILL,
    BALCONY,
    BLIND,
    DECO,
    MOLDING,
    PILLAR,
    SHOP,
) = range(len(CLASS_NAMES))

#: How far each class stands out of the wall plane (in "relief steps"); used to cast shadows
#: (a higher surface shades a lower one below it) and to bevel edges. Glass is recessed.
_RELIEF = np.array([0, 1, 0, 0, 3, 2, 3, 1, 2, 2, 2, 0], dtype=np.float32)

SPLITS: tuple[str, ...] = ("train", "val", "test")

# --------------------------------------------------------------------------------------------
# Layout: a random facade as an integer class map.
# --------------------------------------------------------------------------------------------

Rect = tuple[int, int, int, int]  # (y0, y1, x0, x1), half-open, in pixels.


@dataclasses.dataclass
class Layout:
    """A sampled facade: the class map plus the geometry and style the renderer needs.

    Every style attribute is visible in the label map (directly or through its spatial
    arrangement), so a photo rendered from them is predictable from ``labels``.

    Attributes:
      labels: ``[R, R]`` uint8 class ids (indices into :data:`CLASS_NAMES`).
      facade: the wall rectangle ``(y0, y1, x0, x1)``; outside it is background.
      windows: glazed rectangles (windows and shop windows) in drawing order; parts of them
        may since have been painted over (closed shutters, blinds, balconies).
      window_floors: for each of ``windows``, its floor (0 = top floor).
      floor_tops: pixel row of the top of each floor, top floor first.
      n_cols: number of window columns.
      blinds: ``"none"``, ``"shutters"`` (beside the windows) or ``"roller"`` (over them).
      balconies: ``"none"``, ``"per_window"`` or ``"continuous"``.
      pillars: whether pilasters frame the facade.
      shop: whether the ground floor has shop windows.

    """

    labels: np.ndarray
    facade: Rect
    windows: list[Rect]
    window_floors: list[int] = dataclasses.field(default_factory=list)
    floor_tops: list[int] = dataclasses.field(default_factory=list)
    n_cols: int = 0
    blinds: str = "none"
    balconies: str = "none"
    pillars: bool = False
    shop: bool = False

    @property
    def n_floors(self) -> int:
        """Number of floors, ground floor included."""
        return len(self.floor_tops)


class _Canvas:
    """Paints axis-aligned rectangles into a class map, clipped to the image."""

    def __init__(self, resolution: int):
        """Start an all-background ``resolution`` x ``resolution`` class map."""
        self.r = resolution
        self.labels = np.full((resolution, resolution), BACKGROUND, dtype=np.uint8)

    def rect(self, y0: float, y1: float, x0: float, x1: float) -> Rect:
        """Round a float rectangle to pixels, clipped, and at least 1 px in each direction."""
        # Plain Python arithmetic: thousands of rectangles per second, numpy calls cost more.
        r = self.r
        iy0 = min(max(round(y0), 0), r - 1)
        ix0 = min(max(round(x0), 0), r - 1)
        # Never let an element vanish at small resolutions: that would make the label map
        # drop classes that the photo still shows.
        iy1 = min(max(round(y1), iy0 + 1), r)
        ix1 = min(max(round(x1), ix0 + 1), r)
        return int(iy0), int(iy1), int(ix0), int(ix1)

    def paint(self, y0: float, y1: float, x0: float, x1: float, cls: int) -> Rect:
        """Paint one rectangle with class ``cls`` and return its pixel rectangle."""
        box = self.rect(y0, y1, x0, x1)
        self.labels[box[0] : box[1], box[2] : box[3]] = cls
        return box


class _Extent(NamedTuple):
    """The wall rectangle in unrounded pixels, ``(y0, y1, x0, x1)`` as :meth:`_Canvas.paint`."""

    y0: float
    y1: float
    x0: float
    x1: float


@dataclasses.dataclass(frozen=True)
class _Floors:
    """How the wall divides vertically.

    Attributes:
      roof_h: height of the roof cornice band at the top of the wall.
      spans: ``(top, bottom)`` of each floor, top floor first, the ground floor last.
      height: mean height of the upper floors (the wall's height if there is one floor).

    """

    roof_h: float
    spans: list[tuple[float, float]]
    height: float

    @property
    def n(self) -> int:
        """Number of floors, ground floor included."""
        return len(self.spans)


@dataclasses.dataclass(frozen=True)
class _WindowGrid:
    """The columns and window size shared by all floors.

    Attributes:
      n_cols: number of window columns.
      side: side margin, in units of ``spacing``.
      spacing: distance between column centres.
      centres: x of each column's centre.
      win_w: window width.
      win_h: window height.
      win_pos: where a window sits vertically in its floor (0 = top, 1 = bottom).
      jitter: scale of the per-window random offsets.

    """

    n_cols: int
    side: float
    spacing: float
    centres: np.ndarray
    win_w: float
    win_h: float
    win_pos: float
    jitter: float


@dataclasses.dataclass(frozen=True)
class _WindowStyle:
    """How this building dresses its windows.

    Attributes:
      frame: molding frames around the windows.
      lintel: decorated lintels above them.
      sill: sills below them (where there is no balcony).
      blinds: ``"none"``, ``"shutters"`` or ``"roller"``.
      balconies: ``"none"``, ``"per_window"`` or ``"continuous"``.
      balcony_floors: for each floor, whether it has balconies.
      attic: whether the top floor has shorter windows.

    """

    frame: bool
    lintel: bool
    sill: bool
    blinds: str
    balconies: str
    balcony_floors: np.ndarray
    attic: bool


@dataclasses.dataclass
class _Sketch:
    """A layout being drawn: what the window-painting steps share, and the glazing so far."""

    rng: np.random.Generator
    cv: _Canvas
    extent: _Extent
    floors: _Floors
    grid: _WindowGrid
    style: _WindowStyle
    windows: list[Rect] = dataclasses.field(default_factory=list)
    window_floors: list[int] = dataclasses.field(default_factory=list)


class _Door(NamedTuple):
    """The ground-floor door: centre, width and unrounded left/right edges."""

    cx: float
    w: float
    x0: float
    x1: float


def sample_layout(rng: np.random.Generator, resolution: int) -> Layout:
    """Sample a random building facade and paint its CMP-style class map.

    The structure follows what CMP Facades shows: a wall with floors, a regular grid of windows
    (with per-window jitter), sills under and optional moldings/lintels around windows,
    shutters or roller blinds, balconies on some floors, string courses and a roof cornice, a
    ground floor with a door and possibly shop windows, optional pillars, and background
    (sky, neighbouring buildings, street) at the edges.

    Args:
      rng: source of randomness; the layout is a pure function of its state.
      resolution: side length ``R`` of the square output.

    Returns:
      The sampled :class:`Layout`.

    """
    # The steps run in a fixed order: each draws from `rng` in turn and paints over what the
    # earlier ones painted, so reordering them would change every dataset already generated.
    r = float(resolution)
    cv = _Canvas(resolution)
    extent = _sample_extent(rng, r)
    facade = cv.paint(*extent, FACADE)
    floors = _sample_floors(rng, r, extent)
    pillars = _paint_pillars(rng, cv, r, extent)
    _paint_string_courses(rng, cv, r, extent, floors)
    grid = _sample_window_grid(rng, extent, floors)
    style = _sample_window_style(rng, floors.n)
    sketch = _Sketch(rng, cv, extent, floors, grid, style)
    _paint_upper_floors(sketch)
    shop = _paint_ground_floor(sketch)
    _paint_roof_cornice(rng, cv, r, extent, floors.roof_h)
    return Layout(
        labels=cv.labels,
        facade=facade,
        windows=sketch.windows,
        window_floors=sketch.window_floors,
        floor_tops=[int(round(top)) for top, _ in floors.spans],
        n_cols=grid.n_cols,
        blinds=str(style.blinds),
        balconies=str(style.balconies),
        pillars=pillars,
        shop=shop,
    )


def _sample_extent(rng: np.random.Generator, r: float) -> _Extent:
    """Draw the wall rectangle: neighbours may show at the sides, sky above, street below."""
    u = rng.uniform
    fx0 = u(0.0, 0.1) * r if rng.random() < 0.7 else 0.0
    fx1 = r - (u(0.0, 0.1) * r if rng.random() < 0.7 else 0.0)
    fy0 = u(0.02, 0.16) * r
    fy1 = r - (u(0.0, 0.05) * r if rng.random() < 0.6 else 0.0)
    return _Extent(fy0, fy1, fx0, fx1)


def _sample_floors(rng: np.random.Generator, r: float, extent: _Extent) -> _Floors:
    """Draw the floors: a taller ground floor, roughly equal upper floors under a roof band."""
    u = rng.uniform
    fy0, fy1 = extent.y0, extent.y1
    roof_h = max(1.0, u(0.015, 0.04) * r)
    n_floors = int(rng.integers(3, 7))
    weights = np.concatenate([u(0.85, 1.05, n_floors - 1), [u(1.15, 1.5)]])  # top .. ground
    bounds = (
        fy0
        + roof_h
        + np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum() * (fy1 - fy0 - roof_h)
    )
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    height = float(np.mean(np.diff(bounds[:-1]))) if n_floors > 1 else fy1 - fy0
    return _Floors(roof_h=roof_h, spans=spans, height=height)


def _paint_pillars(rng: np.random.Generator, cv: _Canvas, r: float, extent: _Extent) -> bool:
    """Maybe paint full-height pilasters at both wall edges; return whether it did."""
    pillars = bool(rng.random() < 0.35)
    if pillars:
        pw = max(1.0, rng.uniform(0.02, 0.05) * r)
        cv.paint(extent.y0, extent.y1, extent.x0, extent.x0 + pw, PILLAR)
        cv.paint(extent.y0, extent.y1, extent.x1 - pw, extent.x1, PILLAR)
    return pillars


def _paint_string_courses(
    rng: np.random.Generator, cv: _Canvas, r: float, extent: _Extent, floors: _Floors
) -> None:
    """Paint string courses between floors; one always runs above the ground floor."""
    course_cls = MOLDING if rng.random() < 0.5 else CORNICE
    course_h = max(1.0, rng.uniform(0.006, 0.016) * r)
    has_courses = rng.random() < 0.6
    ground = floors.n - 1
    for i, (top, _) in enumerate(floors.spans[1:], start=1):
        if has_courses or i == ground:
            cls = CORNICE if i == ground else course_cls
            cv.paint(top - course_h, top, extent.x0, extent.x1, cls)


def _sample_window_grid(rng: np.random.Generator, extent: _Extent, floors: _Floors) -> _WindowGrid:
    """Draw the window columns and the window size."""
    u = rng.uniform
    fw = extent.x1 - extent.x0
    max_cols = int(np.clip(fw / 7.0, 2, 7))  # keep windows >= ~2 px wide at 32x32
    n_cols = int(rng.integers(2, max_cols + 1))
    side = u(0.1, 0.6)
    spacing = fw / (n_cols + 2 * side)
    centres = extent.x0 + (side + np.arange(n_cols) + 0.5) * spacing
    win_w = spacing * u(0.35, 0.62)
    win_h = floors.height * u(0.45, 0.72)
    win_pos = u(0.35, 0.65)
    jitter = u(0.0, 0.04) * spacing
    return _WindowGrid(n_cols, side, spacing, centres, win_w, win_h, win_pos, jitter)


def _sample_window_style(rng: np.random.Generator, n_floors: int) -> _WindowStyle:
    """Draw how windows are dressed: frames, lintels, sills, blinds and balconies."""
    frame = rng.random() < 0.4
    lintel = rng.random() < 0.35
    sill = rng.random() < 0.85
    blinds = rng.choice(["none", "shutters", "roller"], p=[0.45, 0.3, 0.25])
    balconies = rng.choice(["none", "per_window", "continuous"], p=[0.5, 0.3, 0.2])
    balcony_floors = rng.random(n_floors) < rng.uniform(0.3, 1.0)
    attic = n_floors > 3 and rng.random() < 0.3
    return _WindowStyle(frame, lintel, sill, blinds, balconies, balcony_floors, attic)


def _paint_upper_floors(sk: _Sketch) -> None:
    """Paint the jittered window grid of every floor above the ground, and long balconies."""
    grid, style = sk.grid, sk.style
    for f, (top, bottom) in enumerate(sk.floors.spans[:-1]):
        h = grid.win_h * (0.6 if style.attic and f == 0 else 1.0)
        wtop = top + (bottom - top - h) * grid.win_pos
        for cx in grid.centres:
            dx, dy, dw, dh = sk.rng.normal(0.0, 1.0, 4) * grid.jitter
            _paint_window(sk, cx + dx, wtop + dy * 0.5, grid.win_w + dw * 0.5, h + dh * 0.5, f)
        if style.balconies == "continuous" and style.balcony_floors[f]:
            y1, inset = wtop + h, 0.3 * grid.side * grid.spacing
            x0, x1 = sk.extent.x0 + inset, sk.extent.x1 - inset
            sk.cv.paint(y1 - 0.35 * h, y1 + max(1.0, 0.04 * h), x0, x1, BALCONY)


def _paint_window(sk: _Sketch, cx: float, top: float, w: float, h: float, floor: int) -> None:
    """Paint one window with its surroundings: frame, lintel, glass, blinds, sill or balcony."""
    cv, style = sk.cv, sk.style
    x0, x1 = cx - w / 2, cx + w / 2
    y0, y1 = top, top + h
    if style.frame:
        m = max(1.0, 0.08 * w)
        cv.paint(y0 - m, y1 + m, x0 - m, x1 + m, MOLDING)
    if style.lintel:
        lh = max(1.0, 0.12 * h)
        cv.paint(y0 - 2.2 * lh, y0 - 1.0 * lh, x0 - 0.2 * w, x1 + 0.2 * w, DECO)
    sk.windows.append(cv.paint(y0, y1, x0, x1, WINDOW))
    sk.window_floors.append(floor)
    # `w` and `h` travel with the box: recomputing them from its edges would round differently.
    box = _Extent(y0, y1, x0, x1)
    _paint_blinds(sk, box, w, h)
    _paint_sill_or_balcony(sk, box, w, h, floor)


def _paint_blinds(sk: _Sketch, box: _Extent, w: float, h: float) -> None:
    """Paint shutters beside the window (sometimes closed over it) or a roller blind over it."""
    y0, y1, x0, x1 = box
    if sk.style.blinds == "shutters":
        # Open shutters are half a window wide, but never reach into the next column.
        sw = min(0.45 * w, 0.48 * (sk.grid.spacing - w))
        if sk.rng.random() < 0.15:  # closed shutters hide the glass completely
            sk.cv.paint(y0, y1, x0, x1, BLIND)
        sk.cv.paint(y0, y1, x0 - sw, x0, BLIND)
        sk.cv.paint(y0, y1, x1, x1 + sw, BLIND)
    elif sk.style.blinds == "roller" and sk.rng.random() < 0.7:
        sk.cv.paint(y0, y0 + h * sk.rng.uniform(0.1, 0.7), x0, x1, BLIND)


def _paint_sill_or_balcony(sk: _Sketch, box: _Extent, w: float, h: float, floor: int) -> None:
    """Paint a balcony in front of the window if its floor has them per window, else a sill."""
    _, y1, x0, x1 = box
    style = sk.style
    on_balcony = style.balconies != "none" and style.balcony_floors[floor]
    if on_balcony and style.balconies == "per_window":
        sk.cv.paint(y1 - 0.35 * h, y1 + max(1.0, 0.04 * h), x0 - 0.2 * w, x1 + 0.2 * w, BALCONY)
    elif style.sill and not on_balcony:
        sh = max(1.0, 0.06 * h)
        sk.cv.paint(y1, y1 + sh, x0 - 0.12 * w, x1 + 0.12 * w, SILL)


def _paint_ground_floor(sk: _Sketch) -> bool:
    """Paint the ground floor: a door, then shop windows or ordinary ones; return ``shop``."""
    door = _paint_door(sk)
    shop = bool(sk.rng.random() < 0.45)
    if shop:
        _paint_shop_fronts(sk, door)
    else:
        _paint_ground_windows(sk, door)
    return shop


def _paint_door(sk: _Sketch) -> _Door:
    """Paint the door, mostly under a window column, else in the middle of the wall."""
    rng, grid = sk.rng, sk.grid
    ground_top, ground_bottom = sk.floors.spans[-1]
    gh = ground_bottom - ground_top
    door_col = int(rng.integers(grid.n_cols))
    cx = grid.centres[door_col] if rng.random() < 0.7 else (sk.extent.x0 + sk.extent.x1) / 2
    w = min(grid.spacing * 0.95, grid.win_w * rng.uniform(1.0, 1.6))
    h = gh * rng.uniform(0.6, 0.85)
    x0, x1 = cx - w / 2, cx + w / 2
    sk.cv.paint(ground_bottom - h, ground_bottom, x0, x1, DOOR)
    return _Door(cx, w, x0, x1)


def _paint_shop_fronts(sk: _Sketch, door: _Door) -> None:
    """Paint shop windows filling the ground floor left and right of the door, 1-2 per side."""
    rng = sk.rng
    ground_top, ground_bottom = sk.floors.spans[-1]
    gh = ground_bottom - ground_top
    shop_top = ground_top + gh * rng.uniform(0.12, 0.3)
    shop_bottom = ground_bottom - gh * rng.uniform(0.0, 0.08)
    gap = max(1.0, sk.grid.spacing * rng.uniform(0.1, 0.3))
    for a, b in ((sk.extent.x0 + gap, door.x0 - gap), (door.x1 + gap, sk.extent.x1 - gap)):
        if b - a < 3:
            continue
        n = int(rng.integers(1, 3))
        edges = np.linspace(a, b, n + 1)
        for s0, s1 in zip(edges[:-1], edges[1:], strict=True):
            sk.windows.append(sk.cv.paint(shop_top, shop_bottom, s0 + gap / 4, s1 - gap / 4, SHOP))
            sk.window_floors.append(sk.floors.n - 1)


def _paint_ground_windows(sk: _Sketch, door: _Door) -> None:
    """Paint ordinary ground-floor windows in the grid columns that the door leaves free."""
    grid = sk.grid
    ground_top, ground_bottom = sk.floors.spans[-1]
    gh = ground_bottom - ground_top
    wtop = ground_top + (gh - grid.win_h) * sk.rng.uniform(0.3, 0.6)
    for cx in grid.centres:
        if abs(cx - door.cx) < (door.w + grid.win_w) / 2 + 1:
            continue
        dx = sk.rng.normal() * grid.jitter
        _paint_window(sk, cx + dx, wtop, grid.win_w, grid.win_h, sk.floors.n - 1)


def _paint_roof_cornice(
    rng: np.random.Generator, cv: _Canvas, r: float, extent: _Extent, roof_h: float
) -> None:
    """Paint the roof cornice, slightly wider than the wall, last so that it caps everything."""
    overhang = rng.uniform(0.0, 0.02) * r
    cv.paint(extent.y0, extent.y0 + roof_h, extent.x0 - overhang, extent.x1 + overhang, CORNICE)


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """Paint a class-id map with :data:`PALETTE`: ``[H, W]`` ids -> ``[H, W, 3]`` uint8."""
    return np.take(PALETTE, labels, axis=0)  # np.take: ~2x faster than fancy indexing


# --------------------------------------------------------------------------------------------
# Photo rendering.
# --------------------------------------------------------------------------------------------


def _lerp_axis(a: np.ndarray, n: int, cells: float, offset: float, axis: int) -> np.ndarray:
    """Smoothly interpolate lattice values along ``axis`` onto ``n`` pixels ``cells`` apart."""
    pos = np.arange(n, dtype=np.float32) / np.float32(cells) + np.float32(offset)
    i0 = pos.astype(np.intp)
    f = pos - i0
    f = f * f * (3 - 2 * f)  # smoothstep: no visible creases along lattice lines
    if axis == 1:
        return a[:, i0] * (1 - f) + a[:, i0 + 1] * f
    return a[i0] * (1 - f)[:, None] + a[i0 + 1] * f[:, None]


def _value_noise(rng: np.random.Generator, shape: tuple[int, int], cells: float) -> np.ndarray:
    """Return a smooth random field in about [-1, 1]: a lattice ``cells`` px apart, upsampled.

    Interpolates one axis at a time with gathers. (Not matrix products: multithreaded BLAS
    on small matrices is erratic, up to 50x slower, when the CPUs are busy.)
    """
    h, w = shape
    gh, gw = int(h / cells) + 3, int(w / cells) + 3
    grid = rng.uniform(-1.0, 1.0, (gh, gw)).astype(np.float32)
    # Random sub-cell offsets so that the lattice does not line up with the label geometry.
    rows = _lerp_axis(grid, h, cells, rng.uniform(0, 1), axis=0)
    return _lerp_axis(rows, w, cells, rng.uniform(0, 1), axis=1)


def _fractal_noise(
    rng: np.random.Generator, shape: tuple[int, int], cells: float, octaves: int = 3
) -> np.ndarray:
    """Return a sum of value-noise octaves (each twice as fine and half as strong)."""
    # Even the finest octave is smooth over several pixels, so sum the octaves on a grid
    # ``k`` times coarser and upsample once: about k^2 times fewer pixel operations.
    k = max(1, int(cells / 2 ** (octaves - 1) / 2))
    small = (shape[0] // k + 3, shape[1] // k + 3) if k > 1 else shape
    out = np.zeros(small, np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        out += amp * _value_noise(rng, small, max(cells / k, 1.0))
        total += amp
        amp, cells = amp * 0.5, cells / 2
    out /= total
    if k > 1:
        out = _lerp_axis(out, shape[0], k, 0.0, axis=0)
        out = _lerp_axis(out, shape[1], k, 0.0, axis=1)
    return out


def _rgb(r: float, g: float, b: float) -> np.ndarray:
    """Return an RGB colour in ``[0, 1]`` as a float32 ``[3]`` array."""
    return np.array((r, g, b), dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Material:
    """How a wall is built: its colour, trim colour and surface pattern.

    Attributes:
      name: short name.
      wall: RGB colour of the wall in ``[0, 1]``.
      trim: RGB colour of cornices, sills, moldings, decorations and pillars.
      pattern: ``"plaster"`` (smooth stains), ``"ashlar"`` (stone blocks) or ``"brick"``.

    """

    name: str
    wall: np.ndarray
    trim: np.ndarray
    pattern: str


#: The wall materials, picked by :func:`choose_material` from features of the label map.
MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("cream_plaster", _rgb(0.90, 0.87, 0.78), _rgb(0.96, 0.95, 0.92), "plaster"),
        Material("ochre_plaster", _rgb(0.91, 0.82, 0.66), _rgb(0.96, 0.94, 0.88), "plaster"),
        Material("limestone", _rgb(0.87, 0.85, 0.79), _rgb(0.95, 0.94, 0.90), "ashlar"),
        Material("grey_render", _rgb(0.83, 0.83, 0.81), _rgb(0.95, 0.95, 0.94), "plaster"),
        Material("buff_brick", _rgb(0.84, 0.72, 0.57), _rgb(0.95, 0.94, 0.90), "brick"),
    )
}

# Fixed colours of everything else, in [0, 1].
_SKY_TOP = _rgb(0.60, 0.74, 0.92)
_SKY_HORIZON = _rgb(0.78, 0.86, 0.95)
_NEIGHBOUR = _rgb(0.74, 0.77, 0.82)  # pale, hazy buildings
_STREET = _rgb(0.64, 0.63, 0.61)  # pale stone pavement
_GLASS = _rgb(0.07, 0.09, 0.12)
_FRAME = _rgb(0.20, 0.21, 0.23)  # anthracite window frames
_SHUTTER = _rgb(0.18, 0.36, 0.24)  # painted green wooden shutters (beside the windows)
_ROLLER = _rgb(0.40, 0.31, 0.22)  # wooden roller blinds (over the windows)
_DOOR = _rgb(0.28, 0.16, 0.09)  # dark varnished wood
_IRON = _rgb(0.09, 0.09, 0.10)  # balcony railings
_SHOP_LIGHT = _rgb(0.55, 0.45, 0.30)  # warm lit interior seen through shop windows


def choose_material(layout: Layout) -> Material:
    """Pick the wall material from features visible in the label map.

    Pilasters mean a dressed limestone front; shutters a warm Mediterranean ochre; shops a
    grey commercial render; otherwise short (<= 4 floors) houses are buff brick and taller
    apartment blocks cream plaster.
    """
    if layout.pillars:
        return MATERIALS["limestone"]
    if layout.blinds == "shutters":
        return MATERIALS["ochre_plaster"]
    if layout.shop:
        return MATERIALS["grey_render"]
    return MATERIALS["buff_brick" if layout.n_floors <= 4 else "cream_plaster"]


@dataclasses.dataclass(frozen=True)
class _Raster:
    """The label map and pixel coordinates that the rendering steps share.

    Attributes:
      labels: ``[R, R]`` class ids.
      res: side length ``R``.
      s: scale of pixel-sized features relative to 256x256.
      yy: ``[R, 1]`` float32 row positions in ``[0, 1]``.
      xx: ``[1, R]`` float32 column positions in ``[0, 1]``.
      ramp: ``[R]`` integer pixel indices.

    """

    labels: np.ndarray
    res: int
    s: float
    yy: np.ndarray
    xx: np.ndarray
    ramp: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(R, R)``."""
        return (self.res, self.res)


def _raster(labels: np.ndarray) -> _Raster:
    """Return the :class:`_Raster` of a square label map."""
    res = labels.shape[0]
    return _Raster(
        labels=labels,
        res=res,
        s=res / 256.0,
        yy=np.linspace(0.0, 1.0, res, dtype=np.float32)[:, None],
        xx=np.linspace(0.0, 1.0, res, dtype=np.float32)[None, :],
        ramp=np.arange(res),
    )


def render_photo(layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """Render a photo-like ``[R, R, 3]`` uint8 image of ``layout``.

    Appearance is a deterministic function of the layout: the wall material follows
    :func:`choose_material`, every other class has a fixed colour (shutters and roller
    blinds differ, and tell apart by where they sit), glass reflects more sky on higher
    floors, and the sun, shadows and light gradients are fixed functions of the geometry.
    ``rng`` only drives a small residual: texture phases (plaster stains, brick tones,
    clouds), an exposure and white-balance jitter of a few percent, and sensor noise.

    Args:
      layout: the facade to render (see :func:`sample_layout`).
      rng: source of the residual randomness.

    Returns:
      The rendered photo.

    """
    # The steps run in a fixed order because each draws from `rng` in turn. Whole-image work
    # is done with table lookups and np.where over broadcast operands: boolean-mask
    # assignment of full images costs several times more.
    rs = _raster(layout.labels)
    material = choose_material(layout)
    bg = _render_background(rng, layout, rs)
    img = _render_surfaces(rng, layout, material, rs, bg)
    img = _render_balconies(img, rs, material)
    _render_glass(rng, layout, rs, img)
    _expose(rng, img, _relief_shade(rs) * _global_light(layout, rs))
    return _camera(rng, img)


def _render_background(rng: np.random.Generator, layout: Layout, rs: _Raster) -> np.ndarray:
    """Draw the surroundings: a sky with faint clouds, neighbouring buildings, the street."""
    f32 = np.float32
    res, s = rs.res, rs.s
    fy0, fy1, fx0, fx1 = layout.facade
    fh = max(fy1 - fy0, 1)
    clouds = np.clip(_fractal_noise(rng, rs.shape, 48 * s + 4, 3), 0, 1) * f32(0.15)
    sky = _SKY_TOP + (_SKY_HORIZON - _SKY_TOP) * rs.yy[..., None]  # [R, 1, 3]
    bg = sky + (f32(0.95) - sky) * clouds[..., None]
    # Neighbours: their roofs sit a fixed fraction down the facade; the one on the right is
    # in the facade's shade (the sun comes from the upper left).
    for (lo, hi), roof_frac, lit in (((0, fx0), 0.3, 0.97), ((fx1, res), 0.2, 0.85)):
        if hi > lo:
            roof = fy0 + int(roof_frac * fh)
            tex = _value_noise(rng, (res - roof, hi - lo), 8 * s + 2) * f32(0.03)
            bg[roof:, lo:hi] = _NEIGHBOUR * f32(lit) * (1 + tex[..., None])
    if fy1 < res:
        tex = _value_noise(rng, (res - fy1, res), 3) * f32(0.05)
        bg[fy1:] = _STREET * (1 + tex[..., None])
    return bg


def _render_surfaces(
    rng: np.random.Generator, layout: Layout, material: Material, rs: _Raster, bg: np.ndarray
) -> np.ndarray:
    """Draw every class in its flat colour times its brightness texture, over ``bg``."""
    colours = _class_colours(layout, material)
    tex = _surface_texture(rng, material, rs)
    img = np.take(colours, rs.labels, axis=0) * (1 + tex)[..., None]
    return np.where((rs.labels == BACKGROUND)[..., None], bg, img)


def _class_colours(layout: Layout, material: Material) -> np.ndarray:
    """Return each class's flat RGB colour: the material's wall and trim, fixed ones elsewhere."""
    colours = np.zeros((len(CLASS_NAMES), 3), np.float32)
    colours[FACADE] = material.wall
    for cls in (CORNICE, SILL, DECO, MOLDING, PILLAR):
        colours[cls] = material.trim
    colours[BLIND] = _SHUTTER if layout.blinds == "shutters" else _ROLLER
    colours[DOOR] = _DOOR
    return colours


def _surface_texture(rng: np.random.Generator, material: Material, rs: _Raster) -> np.ndarray:
    """Compute the brightness texture: wall, stone grain, slats, planks, fluting, fine grain."""
    f32 = np.float32
    lab, ramp, s = rs.labels, rs.ramp, rs.s
    wall_tex = _wall_texture(rng, material, rs)
    stone_tex = _value_noise(rng, rs.shape, 6 * s + 1.5) * f32(0.02)
    slats = ((ramp[:, None] % max(2, round(4 * s))) == 0) * f32(-0.3)
    planks = ((ramp[None, :] % max(2, round(6 * s))) == 0) * f32(-0.3)
    fluting = f32(0.05) * np.sin(rs.xx * f32(rs.res / max(2.0, 6 * s)))
    tex = np.where(lab == FACADE, wall_tex, stone_tex)
    tex += np.where(lab == BLIND, slats, f32(0))
    tex += np.where(lab == DOOR, planks, f32(0))
    tex += np.where(lab == PILLAR, fluting, f32(0))
    tex += (rng.random(rs.shape, f32) - f32(0.5)) * f32(0.015)  # fine grain everywhere
    return tex


def _wall_texture(rng: np.random.Generator, material: Material, rs: _Raster) -> np.ndarray:
    """Compute the wall's brightness texture: plaster stains plus the material's masonry."""
    wall_tex = _fractal_noise(rng, rs.shape, 40 * rs.s + 3, 4) * np.float32(0.025)
    if material.pattern == "brick":
        return _add_brickwork(rng, wall_tex, rs)
    if material.pattern == "ashlar":
        return _add_ashlar_joints(wall_tex, rs)
    return wall_tex


def _add_brickwork(rng: np.random.Generator, wall_tex: np.ndarray, rs: _Raster) -> np.ndarray:
    """Add staggered bricks to ``wall_tex``: a random tone per brick and light mortar joints."""
    ramp = rs.ramp
    bh = max(2, round(7 * rs.s))  # course height
    bw = 3 * bh
    row = ramp[:, None] // bh
    xs = ramp[None, :] + (row % 2) * (bw // 2)
    col = xs // bw
    tone = rng.normal(0, 0.035, (row.max() + 2, col.max() + 2)).astype(np.float32)
    mortar = ((ramp[:, None] % bh) == 0) | ((xs % bw) == 0)
    return wall_tex + tone[row, col] + mortar * np.float32(0.12)


def _add_ashlar_joints(wall_tex: np.ndarray, rs: _Raster) -> np.ndarray:
    """Add staggered stone courses with thin dark joints to ``wall_tex``."""
    ramp = rs.ramp
    bh = max(3, round(18 * rs.s))
    bw = 2 * bh
    row = ramp[:, None] // bh
    xs = ramp[None, :] + (row % 2) * (bw // 2)
    joints = ((ramp[:, None] % bh) == 0) | ((xs % bw) == 0)
    return wall_tex - joints * np.float32(0.08)


def _render_balconies(img: np.ndarray, rs: _Raster, material: Material) -> np.ndarray:
    """Draw balconies as iron railings, see-through between the bars, with a solid top rail."""
    bars = (rs.ramp % max(2, round(4 * rs.s))) == 0
    see_through = np.float32(0.45) * _IRON + np.float32(0.4) * material.wall
    railing = np.where(bars[:, None], _IRON, see_through)
    bal = rs.labels == BALCONY
    top_rail = bal.copy()
    top_rail[1:] &= ~bal[:-1]
    img = np.where(bal[..., None], railing, img)
    img[top_rail] = _IRON
    return img


def _render_glass(rng: np.random.Generator, layout: Layout, rs: _Raster, img: np.ndarray) -> None:
    """Draw the glass and frames of every window and shop window into ``img``, in place."""
    frame_w = max(1, round(1.8 * rs.s))
    transom = layout.n_floors <= 4  # tall old windows of low houses have a transom bar
    n_floors = max(layout.n_floors, 1)
    glass_noise = _value_noise(rng, rs.shape, 10 * rs.s + 2) * np.float32(0.05)
    floors = layout.window_floors or [n_floors - 1] * len(layout.windows)
    for (y0, y1, x0, x1), floor in zip(layout.windows, floors, strict=True):
        h, w = y1 - y0, x1 - x0
        shop = rs.labels[y0, x0] == SHOP
        height = 1.0 - floor / max(n_floors - 1, 1)  # 1 on the top floor, 0 on the ground
        pane = _glass_pane(glass_noise[y0:y1, x0:x1], height, shop)
        if (w >= 4 and h >= 4) or shop:
            _draw_window_frame(pane, min(frame_w, max(1, w // 6)), shop, transom)
        # Blinds or balconies painted over a window keep their look: only fill the glass.
        region = rs.labels[y0:y1, x0:x1]
        m = (region == WINDOW) | (region == SHOP)
        img[y0:y1, x0:x1][m] = pane[m]


def _glass_pane(noise: np.ndarray, height: float, shop: bool) -> np.ndarray:
    """Compute one pane's glass: dark, reflecting the sky, with a diagonal glint.

    It reflects more sky on higher floors (``height`` 1 at the top, 0 on the ground: less of
    the street opposite is mirrored) and towards the pane's top.
    """
    f32 = np.float32
    h, w = noise.shape
    t = np.linspace(1.0, 0.0, h, dtype=f32)[:, None, None]
    gy = np.arange(h, dtype=f32)[:, None] / max(h, 1)
    gx = np.arange(w, dtype=f32)[None, :] / max(w, 1)
    glint = np.abs(gx + f32(0.6) * gy - f32(0.55)) < f32(0.12)
    pane = _GLASS * (1 + noise[..., None])
    pane = pane + _SKY_TOP * f32(0.08 + 0.22 * height) * t
    pane = pane + glint[..., None] * f32(0.06 + 0.1 * height)
    if shop:  # a warm lit interior shows through the lower part of shop windows
        pane = pane + _SHOP_LIGHT * (1 - t) * f32(0.5)
    return pane


def _draw_window_frame(pane: np.ndarray, f: int, shop: bool, transom: bool) -> None:
    """Draw a ``f`` px frame into ``pane``; ordinary windows also get a mullion, maybe a transom."""
    h, w = pane.shape[:2]
    pane[:f], pane[-f:], pane[:, :f], pane[:, -f:] = _FRAME, _FRAME, _FRAME, _FRAME
    if not shop:
        mc = w // 2
        pane[:, max(0, mc - f // 2) : mc + max(1, f - f // 2)] = _FRAME
        if transom and h >= 8:
            pane[h // 3 : h // 3 + f] = _FRAME


def _relief_shade(rs: _Raster) -> np.ndarray:
    """Compute the relief's shading: bevelled edges times shadows cast by raised elements."""
    relief = np.take(_RELIEF, rs.labels)
    shade = _bevel_shade(relief, rs)
    shadow = _cast_shadow(relief, rs)
    shade *= 1 - np.float32(0.22) * np.where(rs.labels == BACKGROUND, np.float32(0), shadow)
    return shade


def _bevel_shade(relief: np.ndarray, rs: _Raster) -> np.ndarray:
    """Compute the bevel of raised elements: lit top edges, dark bottom edges."""
    f32 = np.float32
    raised = relief > 1
    shade = np.ones(rs.shape, f32)
    shade[1:] += f32(0.06) * ((relief[1:] > relief[:-1]) & raised[1:])  # top edges
    shade[:-1] -= f32(0.12) * ((relief[:-1] > relief[1:]) & raised[:-1])  # bottom edges
    return shade


def _cast_shadow(relief: np.ndarray, rs: _Raster) -> np.ndarray:
    """Compute shadow strength in [0, 1], cast down and to the right from relief steps."""
    # The sun is fixed, high on the upper left.
    res = rs.res
    length = max(1, round(3.0 * rs.s))
    slope = 0.4
    reach = 3 * length  # the tallest step (3) shades 3 * length pixels
    shadow = np.zeros(rs.shape, np.float32)
    for d in range(1, min(reach, res - 1) + 1):
        dx = round(d * slope)
        # Pixel (y, x) is shaded by the surface at (y - d, x - dx): compare offset views.
        tgt = (slice(d, res), slice(max(dx, 0), res + min(dx, 0)))
        src = (slice(0, res - d), slice(max(-dx, 0), res - max(dx, 0)))
        # A step of height dh shades up to dh * length pixels below it, fading with distance.
        hit = (relief[src] - relief[tgt]) * length >= d
        np.maximum(shadow[tgt], hit * np.float32(1.0 - d / (reach + 1)), out=shadow[tgt])
    return shadow


def _global_light(layout: Layout, rs: _Raster) -> np.ndarray:
    """Compute the fixed light: brighter towards the sun, a vignette, a darker ground floor."""
    # The sun is at the top left; the ground floor is in the shade of the street.
    f32 = np.float32
    yy, xx = rs.yy, rs.xx
    light = f32(1.03) - f32(0.04) * yy - f32(0.03) * xx
    light = light - f32(0.05) * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    if layout.floor_tops:
        ground = (rs.ramp >= layout.floor_tops[-1])[:, None] & (rs.labels != BACKGROUND)
        light = np.where(ground, light * f32(0.94), light)
    return light


def _expose(rng: np.random.Generator, img: np.ndarray, light: np.ndarray) -> None:
    """Scale ``img`` in place by ``light``, a small exposure / white-balance jitter and 255."""
    gain = (1 + rng.normal(0.0, 0.007, 3)) * rng.uniform(0.98, 1.02) * 255
    img *= light[..., None] * gain.astype(np.float32)


def _camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Add sensor noise to ``img``, round it to uint8 and apply a slight lens blur."""
    img += rng.standard_normal(img.shape, np.float32) * np.float32(rng.uniform(1.0, 2.5))
    img += np.float32(0.5)  # rounds, with the truncating cast below
    photo = Image.fromarray(np.clip(img, 0, 255, out=img).astype(np.uint8))
    # Pillow blurs in C on the 8-bit image, 4x cheaper than the same blur in numpy.
    a = 0.07
    k = np.outer([a, 1 - 2 * a, a], [a, 1 - 2 * a, a]).ravel().tolist()
    return np.array(photo.filter(ImageFilter.Kernel((3, 3), k, scale=1)))


def generate_example(
    seed: int, split_index: int, index: int, resolution: int
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one ``(photo, label_map)`` pair as uint8 ``[R, R, 3]`` arrays.

    A pure function of its arguments: the layout and the appearance's small random residual
    draw from two independent streams spawned from ``SeedSequence([seed, split_index, index])``.

    Args:
      seed: dataset seed (from the builder config).
      split_index: position of the split in :data:`SPLITS`.
      index: example number within the split.
      resolution: side length of the square images.

    Returns:
      ``(image_a, image_b)``: the rendered photo and the palette-coloured label map.

    """
    layout_seq, photo_seq = np.random.SeedSequence([seed, split_index, index]).spawn(2)
    layout = sample_layout(np.random.default_rng(layout_seq), resolution)
    photo = render_photo(layout, np.random.default_rng(photo_seq))
    return photo, colorize_labels(layout.labels)


def _png(image: np.ndarray) -> bytes:
    """Encode a uint8 image as PNG bytes."""
    buf = io.BytesIO()
    # compress_level=1: ~3x faster than the default and still lossless and deterministic.
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# tensorflow-datasets builder.
# --------------------------------------------------------------------------------------------

_DESCRIPTION = """\
Synthetic, procedurally generated stand-in for the CMP Facades pairs used by pix2pix.

`image_b` is a label map of a building facade painted with the 12-class CMP Facades palette
(background, facade, window, door, cornice, sill, balcony, blind, deco, molding, pillar, shop);
`image_a` is a photo-like rendering of it with wall material, glass, shutters, shadows,
lighting, blur and noise. Appearance is a deterministic function of the layout (the wall
material follows the pilasters, shutters, shop front and number of floors; glass reflections,
shadows and light follow the geometry), up to a small residual (texture phases, a few percent
of exposure jitter, sensor noise), so labels -> photo is learnable but needs spatial context.
Generated offline and deterministically from (config seed, split, index); `index` is the
example's position within its split.
"""

_CITATION = """\
@inproceedings{isola2017image,
  title = {Image-to-Image Translation with Conditional Adversarial Networks},
  author = {Isola, Phillip and Zhu, Jun-Yan and Zhou, Tinghui and Efros, Alexei A.},
  booktitle = {Computer Vision and Pattern Recognition (CVPR)},
  year = {2017}
}
@inproceedings{tylecek2013spatial,
  title = {Spatial Pattern Templates for Recognition of Objects with Regular Structure},
  author = {Tyle{\\v{c}}ek, Radim and {\\v{S}}{\\'a}ra, Radim},
  booktitle = {German Conference on Pattern Recognition (GCPR)},
  year = {2013}
}
"""


@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticFacadesConfig(tfds.core.BuilderConfig):
    """Size and seed of a synthetic facades dataset.

    Attributes:
      resolution: side length of the square images.
      num_train: number of examples in the ``train`` split.
      num_val: number of examples in the ``val`` split.
      num_test: number of examples in the ``test`` split.
      seed: dataset seed; examples are a pure function of (seed, split, index).

    """

    resolution: int = 64
    num_train: int = 400
    num_val: int = 100
    num_test: int = 100
    seed: int = 0


class SyntheticFacades(tfds.core.GeneratorBasedBuilder):
    """Procedurally generated CMP-Facades-like (photo, label map) pairs; no download."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": (
            "Photos are a deterministic function of the layout (wall material chosen from "
            "label-map features, fixed class colours, geometric light and shadows) up to a "
            "small residual, with more contrast; label maps are unchanged."
        ),
    }
    BUILDER_CONFIGS = [
        SyntheticFacadesConfig(
            name="res64", description="64x64 images; 400/100/100 examples.", resolution=64
        ),
        SyntheticFacadesConfig(
            name="res128", description="128x128 images; 400/100/100 examples.", resolution=128
        ),
        SyntheticFacadesConfig(
            name="res256",
            description="256x256 images; 400/100/106 examples, the sizes of the real facades.",
            resolution=256,
            num_test=106,
        ),
        SyntheticFacadesConfig(
            name="res32_small",
            description="32x32 images; 32/8/8 examples: smoke tests and quick trials.",
            resolution=32,
            num_train=32,
            num_val=8,
            num_test=8,
        ),
    ]

    def __init__(self, *, file_format: str | None = None, **kwargs: Any):
        """Create the builder; as the base class, but default to ``array_record``, not tfrecord.

        Writing tfrecord needs TensorFlow, which this package does not depend on; array_record
        is also what ``tfds.data_source`` reads. An explicit ``file_format`` still wins, and a
        dataset already prepared on disk keeps the format recorded in its metadata.
        """
        super().__init__(file_format=file_format, **kwargs)
        # `info.initialized` means dataset_info.json was restored from disk: keep its format.
        if file_format is None and not self.info.initialized:
            self.info.set_file_format("array_record", override=True)

    def _info(self) -> tfds.core.DatasetInfo:
        """Describe the features, supervised keys and citation of the dataset."""
        # DatasetInfo is built directly rather than with `dataset_info_from_configs`, which
        # would read README/CITATIONS/TAGS files from this module's package directory (shared
        # with other builders); everything is stated here instead.
        r = self.builder_config.resolution
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image_a": tfds.features.Image(shape=(r, r, 3), encoding_format="png"),
                    "image_b": tfds.features.Image(shape=(r, r, 3), encoding_format="png"),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=("image_b", "image_a"),  # labels -> photo, as in the paper
            citation=_CITATION,
            # Keep records in generation order, so that record i of a split has index i.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        """Return one example generator per split in :data:`SPLITS`."""
        del dl_manager  # nothing to download
        cfg = self.builder_config
        sizes = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}
        return {name: self._generate_examples(name, sizes[name]) for name in SPLITS}

    def _generate_examples(self, split: str, num_examples: int) -> Iterator[tuple[int, dict]]:
        """Yield ``(index, example)`` with PNG images for the first examples of ``split``."""
        cfg = self.builder_config
        split_index = SPLITS.index(split)
        for i in range(num_examples):
            photo, labels = generate_example(cfg.seed, split_index, i, cfg.resolution)
            # tfds stores encoded bytes as given without checking them, so check shapes here.
            if not photo.shape == labels.shape == (cfg.resolution, cfg.resolution, 3):
                raise ValueError(f"bad shapes {photo.shape}, {labels.shape} for example {i}")
            yield i, {"image_a": _png(photo), "image_b": _png(labels), "index": i}
