"""Shared figures. Heavy imports (matplotlib) happen inside the functions."""

from __future__ import annotations

from typing import Any

#: The kit's pipeline, stage by stage: (label, notebook that teaches it).
PIPELINE_STAGES: tuple[tuple[str, str], ...] = (
    ("DICOM\nmammograms", "01, 02"),
    ("breast crop +\nresize (PNG)", "02"),
    ("reports → cleaned\ntext, prompts", "03"),
    ("image tower\n(EfficientNet)", "04"),
    ("text tower\n(BERT)", "04"),
    ("multi-view\ncontrastive loss", "04"),
    ("zero-shot,\nretrieval", "05"),
    ("linear probe,\nfine-tune", "06"),
    ("RetinaNet\nlocalization", "07"),
    ("robustness\nshifts", "08"),
    ("Mammo-FActOR\nattribution", "09"),
)


def draw_pipeline(ax: Any | None = None):
    """Draw the Mammo-CLIP pipeline (data → two towers → joint space → downstream uses) with matplotlib."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    if ax is None:
        _, ax = plt.subplots(figsize=(13, 5.2))
    ax.set_xlim(0, 13)
    ax.set_ylim(0, 5.2)
    ax.axis("off")

    def box(x, y, text, colour, notebook=None, w=1.9, h=0.9):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="0.3"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5)
        if notebook:
            ax.text(x + w - 0.05, y + h + 0.02, f"nb {notebook}", ha="right", va="bottom", fontsize=7, color="0.35")
        return (x, y, w, h)

    def arrow(a, b):
        (xa, ya, wa, ha), (xb, yb, _, hb) = a, b
        start = (xa + wa, ya + ha / 2)
        end = (xb, yb + hb / 2)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color="0.35"))

    labels = dict(PIPELINE_STAGES)
    notebooks = {label: nb for label, nb in PIPELINE_STAGES}
    keys = list(labels)
    dicom = box(0.1, 3.6, keys[0], "#dbe9f6", notebooks[keys[0]])
    png = box(2.4, 3.6, keys[1], "#dbe9f6", notebooks[keys[1]])
    text = box(2.4, 1.2, keys[2], "#fde9d9", notebooks[keys[2]])
    reports = box(0.1, 1.2, "radiology\nreports", "#fde9d9", "01")
    image_tower = box(4.7, 3.6, keys[3], "#e2f0d9", notebooks[keys[3]])
    text_tower = box(4.7, 1.2, keys[4], "#e2f0d9", notebooks[keys[4]])
    joint = box(7.0, 2.4, "joint 512-d space\n" + keys[5].replace("\n", " "), "#fff2cc", notebooks[keys[5]], w=2.2)
    arrow(dicom, png)
    arrow(png, image_tower)
    arrow(reports, text)
    arrow(text, text_tower)
    arrow(image_tower, joint)
    arrow(text_tower, joint)
    for row, key in enumerate(keys[6:]):
        y = 4.4 - row * 0.95
        down = box(10.2, y, key, "#ece2f0", notebooks[key], w=2.6, h=0.75)
        arrow(joint, down)
    ax.set_title("Mammo-CLIP: mammograms and reports → two towers → one space → many uses", fontsize=11)
    return ax


# --------------------------------------------------------------------------------------------------------------------
# House style: every figure a notebook saves goes through these helpers.
#
# * ``heatmap`` / ``overlay`` draw a matrix or an attribution map with a perceptual colour map and always a colour bar
#   whose label says what the colour means;
# * ``label_points`` writes text labels next to points without letting them overlap each other;
# * ``finish`` titles the figure, lays it out so that nothing is clipped, saves it and records its title and axis
#   labels in ``figures.json`` next to it — the manifest ``mammoclip_kit.course.check_executed`` reads.
# --------------------------------------------------------------------------------------------------------------------

#: Colour maps allowed for quantities (perceptually uniform, readable in grey and by colour-blind viewers).
PERCEPTUAL_CMAPS: tuple[str, ...] = ("viridis", "magma", "cividis", "inferno", "plasma")
#: Colour maps never used for data: their brightness is not monotone, so they invent edges.
FORBIDDEN_CMAPS: frozenset[str] = frozenset({"jet", "rainbow", "hsv", "gist_rainbow", "nipy_spectral", "turbo"})
#: Name of the manifest ``finish`` keeps in the figures folder.
MANIFEST = "figures.json"


def _cmap_name(cmap: Any) -> str:
    return cmap if isinstance(cmap, str) else getattr(cmap, "name", str(cmap))


def check_cmap(cmap: Any) -> str:
    """Return the colour map's name; raise for one that is not perceptual (``jet`` and friends)."""
    name = _cmap_name(cmap)
    base = name[:-2] if name.endswith("_r") else name
    if base not in PERCEPTUAL_CMAPS:
        raise ValueError(f"colour map {name!r} is not one of the kit's perceptual maps {PERCEPTUAL_CMAPS}")
    return name


def heatmap(ax: Any, data: Any, *, label: str, cmap: str = "viridis", vmin: float | None = None,
            vmax: float | None = None, annotate: bool = False, fmt: str = "{:.2f}", fontsize: float = 8,
            **imshow: Any):
    """Draw a matrix with a perceptual colour map and a colour bar labelled ``label``; returns the image.

    ``annotate`` writes each value in its cell, in black or white depending on the cell's brightness.
    """
    import numpy as np

    check_cmap(cmap)
    values = np.asarray(data, dtype=float)
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, **imshow)
    bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(label)
    if annotate:
        for (i, j), value in np.ndenumerate(values):
            if np.isnan(value):
                continue
            red, green, blue, _ = image.cmap(image.norm(value))
            luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
            ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=fontsize,
                    color="black" if luminance > 0.5 else "white")
    return image


def overlay(ax: Any, image: Any, heat: Any, *, label: str, cmap: str = "magma", alpha: float = 0.45,
            vmin: float | None = None, vmax: float | None = None):
    """A grey image with a heat map drawn over it (perceptual colour map, colour bar labelled ``label``)."""
    check_cmap(cmap)
    ax.imshow(image, cmap="gray")
    shown = ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax,
                      extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
    bar = ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(label)
    bar.solids.set_alpha(1.0)
    return shown


def _overlaps(box: Any, placed: list[Any], pad: float) -> bool:
    return any(box.x0 - pad < other.x1 and other.x0 - pad < box.x1 and box.y0 - pad < other.y1
               and other.y0 - pad < box.y1 for other in placed)


def label_points(ax: Any, xs: Any, ys: Any, labels: Any, *, fontsize: float = 8, pad: float = 2.0,
                 **text: Any) -> list[Any]:
    """Write ``labels`` next to the points ``(xs, ys)`` so that no two labels overlap.

    Each label tries positions around its point at growing distances (right, left, above, below and the diagonals, in
    points) and takes the first whose box overlaps no label placed before it; a label pushed away from its point gets
    a thin leader line. ``finish`` places the labels again once the figure's layout is final (the layout moves the
    points). Returns the text artists.
    """
    request = {"points": list(zip(xs, ys, labels, strict=True)), "fontsize": fontsize, "pad": pad, "text": text,
               "artists": []}
    requests = ax.__dict__.setdefault("_kit_label_requests", [])
    requests.append(request)
    request["artists"] = _place_labels(ax, request)
    return request["artists"]


def _place_labels(ax: Any, request: dict[str, Any]) -> list[Any]:
    for artist in request["artists"]:
        artist.remove()
    fontsize, pad, text = request["fontsize"], request["pad"], request["text"]
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    placed: list[Any] = []
    artists = []
    directions = [(1, 0.3), (-1, 0.3), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1)]
    for x, y, label in request["points"]:
        chosen = None
        for radius in (5, 12, 22, 34, 48, 64, 84):
            for dx, dy in directions:
                offset = (dx * radius, dy * radius)
                ha = "left" if dx > 0 else "right" if dx < 0 else "center"
                va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
                artist = ax.annotate(str(label), (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va,
                                     fontsize=fontsize, **text)
                box = artist.get_window_extent(renderer)
                if not _overlaps(box, placed, pad):
                    chosen = (artist, box, radius)
                    break
                artist.remove()
            if chosen:
                break
        if chosen is None:  # nothing free: keep the farthest right position, still readable beside its point
            artist = ax.annotate(str(label), (x, y), xytext=(84, 0), textcoords="offset points", ha="left",
                                 va="center", fontsize=fontsize, **text)
            chosen = (artist, artist.get_window_extent(renderer), 84)
        artist, box, radius = chosen
        if radius > 12:  # far from its point: redraw with a thin leader line (the text stays where it was placed)
            position, ha, va = artist.xyann, artist.get_ha(), artist.get_va()
            artist.remove()
            artist = ax.annotate(str(label), (x, y), xytext=position, textcoords="offset points", ha=ha, va=va,
                                 fontsize=fontsize, arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6},
                                 **text)
        placed.append(box)
        artists.append(artist)
    return artists


def _shared_label(fig: Any, ax: Any, which: str) -> str:
    """The label of another panel that shares this panel's x or y axis (``sharey=True`` labels only the first)."""
    group = ax.get_shared_x_axes() if which == "x" else ax.get_shared_y_axes()
    for other in fig.axes:
        label = other.get_xlabel() if which == "x" else other.get_ylabel()
        if other is not ax and label and group.joined(ax, other):
            return f"{label} (shared)"
    return ""


def describe_figure(fig: Any) -> dict[str, Any]:
    """What a reader needs from a figure, read from its matplotlib objects: titles, axis labels, colour maps."""
    colorbar_axes = set()
    for ax in fig.axes:
        for mappable in [*ax.images, *ax.collections]:
            bar = getattr(mappable, "colorbar", None)
            if bar is not None:
                colorbar_axes.add(id(bar.ax))
    suptitle = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else ""
    axes = []
    for ax in fig.axes:
        if id(ax) in colorbar_axes:
            continue
        images = [m for m in ax.images]
        entry = {
            "title": ax.get_title() or ax.get_title("left") or ax.get_title("right"),
            "xlabel": ax.get_xlabel() or _shared_label(fig, ax, "x"),
            "ylabel": ax.get_ylabel() or _shared_label(fig, ax, "y"),
            "axis_on": bool(ax.axison),
            "colormaps": sorted({_cmap_name(m.get_cmap()) for m in images if m.get_cmap() is not None
                                 and _cmap_name(m.get_cmap()) not in ("gray", "Greys_r", "binary_r")}),
            "colorbars": sorted({m.colorbar.ax.get_ylabel() or m.colorbar.ax.get_xlabel()
                                 for m in [*images, *ax.collections] if getattr(m, "colorbar", None) is not None}),
            "has_data": bool(ax.lines or ax.collections or ax.images or ax.patches or ax.containers),
        }
        axes.append(entry)
    return {"title": suptitle, "axes": axes}


def figure_problems(entry: dict[str, Any]) -> list[str]:
    """House-style problems of one manifest entry (see ``describe_figure``): empty list when it is fine."""
    problems = []
    if not entry.get("title") and not all(a.get("title") for a in entry.get("axes", [])):
        problems.append("no figure title (and not every panel has one)")
    for index, ax in enumerate(entry.get("axes", [])):
        if not ax.get("axis_on") or not ax.get("has_data"):
            continue  # an image panel without axes or an empty frame has no scales to label
        missing = [name for name in ("xlabel", "ylabel") if not ax.get(name)]
        if missing:
            problems.append(f"panel {index} ({ax.get('title') or 'untitled'}) has no {' / '.join(missing)}")
    for index, ax in enumerate(entry.get("axes", [])):
        for cmap in ax.get("colormaps", []):
            base = cmap[:-2] if cmap.endswith("_r") else cmap
            if base in FORBIDDEN_CMAPS:
                problems.append(f"panel {index} uses the colour map {cmap!r}")
            elif base in PERCEPTUAL_CMAPS and not ax.get("colorbars"):
                problems.append(f"panel {index} shows a {cmap} heat map without a colour bar")
    return problems


def finish(fig: Any, title: str, path: Any = None, *, dpi: int = 120) -> dict[str, Any]:
    """Title the figure, lay it out so that nothing is clipped, save it to ``path`` and record it in the manifest.

    The layout is matplotlib's constrained layout when the figure has no layout engine yet, or only the placeholder
    an earlier ``fig.tight_layout()`` leaves (one tight-layout pass instead when it has colour bars; an engine the
    figure chose is kept), and the file is cropped to everything drawn (``bbox_inches="tight"``), so a long title is
    never cut nor drawn over the panels. The manifest ``figures.json`` in the folder of ``path`` maps each file name to
    ``describe_figure``'s record plus its ``problems``. Returns that record.
    """
    import json
    import warnings
    from pathlib import Path

    from matplotlib.layout_engine import PlaceHolderLayoutEngine

    fig.suptitle(title)
    engine = fig.get_layout_engine()
    # None, or the placeholder an earlier fig.tight_layout() leaves behind: that layout did not know the title
    if engine is None or isinstance(engine, PlaceHolderLayoutEngine):
        has_colorbar = any(getattr(m, "colorbar", None) is not None
                           for ax in fig.axes for m in [*ax.images, *ax.collections])
        try:
            if has_colorbar:  # colour bars made beside their axes: constrained layout would break them
                raise RuntimeError
            fig.set_layout_engine("constrained")
        except RuntimeError:  # one tight-layout pass, which makes room for the title too
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                fig.tight_layout()
    requests = [(ax, r) for ax in fig.axes for r in ax.__dict__.get("_kit_label_requests", [])]
    if requests:  # the layout is final now: place the point labels again, then freeze the layout
        fig.canvas.draw()
        if fig.get_layout_engine() is not None:
            fig.set_layout_engine("none")
        for ax, request in requests:
            request["artists"] = _place_labels(ax, request)
    record = describe_figure(fig)
    record["problems"] = figure_problems(record)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        manifest = path.parent / MANIFEST
        entries = json.loads(manifest.read_text()) if manifest.exists() else {}
        entries[path.name] = record
        tmp = manifest.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
        tmp.replace(manifest)
    return record
