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
