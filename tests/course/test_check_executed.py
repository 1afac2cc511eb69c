"""The checker of executed notebooks: each rule fires on a notebook that breaks it and stays quiet otherwise."""

import json

import matplotlib
import nbformat
import numpy as np
import pytest

from mammoclip_kit.course import check_executed as C
from mammoclip_kit.course import figures as F

matplotlib.use("Agg")


def _write(tmp_path, *cells, name="05_example.ipynb"):
    nb = nbformat.v4.new_notebook()
    for kind, source, tags, outputs in cells:
        if kind == "code":
            cell = nbformat.v4.new_code_cell(source, outputs=[nbformat.from_dict(o) for o in outputs])
        else:
            cell = nbformat.v4.new_markdown_cell(source)
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    folder = tmp_path / "notebooks"
    folder.mkdir(exist_ok=True)
    nbformat.write(nb, folder / name)
    return folder / name


GOOD = [
    ("code", "print(1)", [], [{"output_type": "stream", "name": "stdout", "text": "1\n"}]),
    ("markdown", "## Summary\n\n## Exercises\n\n1. One.\n2. Two.", [], []),
    ("code", "print('a')", ["solution"], [{"output_type": "stream", "name": "stdout", "text": "a\n"}]),
    ("code", "print('b')", ["solution"], []),
]


def test_a_clean_notebook_has_no_findings(tmp_path):
    assert C.check_notebook(_write(tmp_path, *GOOD)) == []


def test_each_rule_fires(tmp_path):
    bad = [
        ("code", "warn()", [], [
            {"output_type": "stream", "name": "stderr",
             "text": "/tmp/ipykernel_1/2.py:7: UserWarning: Converting a tensor with requires_grad=True\n"},
            {"output_type": "stream", "name": "stderr",
             "text": "[IPKernelApp] WARNING | Kernel is running over TCP without encryption.\n"},
            {"output_type": "stream", "name": "stderr", "text": "epoch 1:   0%|          | 0/4 [00:00<?, ?it/s]"},
        ]),
        ("code", "bars()", [], [
            {"output_type": "display_data", "metadata": {},
             "data": {"text/plain": "epoch 1/4:   0%|          | 0/28 [00:00<?, ?it/s]",
                      "application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2,
                                                                   "version_minor": 0}}},
            {"output_type": "stream", "name": "stderr",
             "text": "fit:   0%|   | 0/4\rfit:  50%|#  | 2/4\rfit: 100%|###| 4/4\n"},  # finished: fine
        ]),
        ("code", "df", [], [
            {"output_type": "execute_result", "execution_count": 1, "metadata": {},
             "data": {"text/plain": "  notebook  what you learn\n0  00_welcome  what Mammo-CLIP is, the profiles, your environ...",
                      "text/html": "<table class=\"dataframe\"></table>"}},
            {"output_type": "execute_result", "execution_count": 1, "metadata": {},  # shortened on purpose: fine
             "data": {"text/plain": "0  Standard CC and MLO views of both …", "text/html": "<table class=\"dataframe\">"}},
        ]),
        ("code", "1/0", [], [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
                              "traceback": []}]),
        ("markdown", "## Summary\n\n## Exercises\n\n1. One.\n2. Two.\n3. Three.", [], []),
        ("code", "print('a')", ["solution"], []),
        ("code", "# 7. names an exercise that does not exist", ["solution"], []),
    ]
    found = C.check_notebook(_write(tmp_path, *bad))
    by_rule = {}
    for f in found:
        by_rule.setdefault(f.rule, []).append(f)
    assert len(by_rule["stderr-warning"]) == 1  # the TCP notice is allowed, the UserWarning is not
    assert "UserWarning" in by_rule["stderr-warning"][0].message
    assert len(by_rule["frozen-progress"]) == 2  # the stuck text bar and the widget; the finished bar is fine
    assert [f.cell for f in by_rule["traceback"]] == [3]
    assert [f.cell for f in by_rule["truncated-table"]] == [2]
    messages = sorted(f.message for f in by_rule["exercises"])
    assert messages == ["answer cell names exercise 7, which the notebook does not list",
                        "exercise 2 has no answer cell", "exercise 3 has no answer cell"]
    assert C.counts(found)["figure"] == 0


def test_figures_manifest_is_checked(tmp_path):
    import matplotlib.pyplot as plt

    figures = tmp_path / "figures"
    fig, (left, right) = plt.subplots(1, 2)
    F.heatmap(left, np.eye(3), label="similarity")
    left.set(xlabel="text", ylabel="image")
    right.plot([0, 1], [1, 0])  # no axis labels
    record = F.finish(fig, "Two panels", figures / "05_good_and_bad.png")
    plt.close(fig)
    assert record["problems"] == ["panel 1 (untitled) has no xlabel / ylabel"]
    fig, ax = plt.subplots()
    ax.imshow(np.eye(3), cmap="viridis")  # a heat map without colour bar, saved through the helper
    ax.set(xlabel="x", ylabel="y")
    F.finish(fig, "No colour bar", figures / "06_no_bar.png")
    plt.close(fig)
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(figures / "07_by_hand.png")  # saved without the helper
    plt.close(fig)
    manifest = json.loads((figures / F.MANIFEST).read_text())
    assert sorted(manifest) == ["05_good_and_bad.png", "06_no_bar.png"]
    assert manifest["05_good_and_bad.png"]["axes"][0]["colorbars"] == ["similarity"]
    found = C.check_figures(figures)
    assert [(f.notebook, f.rule) for f in found] == [
        ("05 (figure)", "figure"), ("06 (figure)", "figure"), ("07 (figure)", "figure-unrecorded")]
    assert "without a colour bar" in found[1].message


def test_house_style_refuses_jet():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="perceptual"):
        F.heatmap(ax, np.eye(2), label="x", cmap="jet")
    plt.close(fig)
    entry = {"title": "t", "axes": [{"title": "", "xlabel": "a", "ylabel": "b", "axis_on": True, "has_data": True,
                                     "colormaps": ["jet"], "colorbars": ["x"]}]}
    assert F.figure_problems(entry) == ["panel 0 uses the colour map 'jet'"]


def test_point_labels_do_not_overlap(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ys = np.linspace(0, 0.01, 8)
    ax.scatter(np.zeros(8), ys)
    ax.set(xlabel="PC 1", ylabel="PC 2")
    F.label_points(ax, np.zeros(8), ys, [f"a fairly long prompt {i}" for i in range(8)])
    F.finish(fig, "Labels", tmp_path / "labels.png")
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text()]
    assert len(boxes) == 8
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    plt.close(fig)


def test_cli_reports_counts_and_exit_status(tmp_path, capsys):
    _write(tmp_path, *GOOD)
    assert C.main([str(tmp_path / "notebooks")]) == 0
    assert "0 finding(s)" in capsys.readouterr().out
    _write(tmp_path, ("code", "x", [], [{"output_type": "error", "ename": "E", "evalue": "v", "traceback": []}]),
           *GOOD[1:], name="06_bad.ipynb")
    assert C.main([str(tmp_path / "notebooks"), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["traceback"] == 1


def test_finish_keeps_the_title_off_the_panels_after_an_earlier_tight_layout(tmp_path):
    import matplotlib.pyplot as plt

    for with_colorbar in (False, True):
        fig, axes = plt.subplots(1, 2, figsize=(6, 3))
        for ax in axes:
            ax.plot([0, 1], [0, 1])
            ax.set(title="a panel title", xlabel="x", ylabel="y")
        if with_colorbar:
            F.heatmap(axes[1], np.eye(2), label="value")
        fig.tight_layout()  # what library plotting functions do before handing the figure back
        F.finish(fig, "A figure title that must not sit on the panel titles", tmp_path / "f.png")
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        title_box = fig.get_suptitle() and fig._suptitle.get_window_extent(renderer)
        for ax in axes:
            assert title_box.y0 >= ax.title.get_window_extent(renderer).y1 - 1, with_colorbar
        plt.close(fig)
