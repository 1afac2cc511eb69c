"""Notebook 06's figure puts every budget at its real number of training patients (issue: "4-shot" drawn left of
"10 %" although it used 16 patients against 10)."""

import matplotlib
import pandas as pd

from mammoclip_kit.eval import probe as P

matplotlib.use("Agg")


def _results(with_patients=True):
    rows = []
    for budget, patients, value in (("10%", 10, 0.6), ("4-shot", 16, 0.65), ("100%", 100, 0.8)):
        for seed in (0, 1):
            row = {"encoder": "mammoclip", "method": "linear_probe", "task": "density", "metric": "auc",
                   "budget": budget, "seed": seed, "value": value, "ci_low": value - 0.1, "ci_high": value + 0.1}
            if with_patients:
                row["n_train_patients"] = patients
            rows.append(row)
    return pd.DataFrame(rows)


def test_budgets_sit_at_their_number_of_training_patients():
    import matplotlib.pyplot as plt

    fig = P.plot_sweep(_results(), metrics=("auc",))
    ax = fig.axes[0]
    line = next(line for line in ax.lines if len(line.get_xdata()) == 3)
    assert list(line.get_xdata()) == [10, 16, 100]  # 4-shot (16 patients) right of 10 % (10 patients)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10%\n10", "4-shot\n16", "100%\n100"]
    assert ax.get_xscale() == "log" and "patients" in ax.get_xlabel()
    plt.close(fig)


def test_without_patient_counts_the_budgets_keep_their_order():
    import matplotlib.pyplot as plt

    fig = P.plot_sweep(_results(with_patients=False), metrics=("auc",))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["4-shot", "10%", "100%"]
    plt.close(fig)


def test_close_budgets_get_their_labels_on_separate_rows():
    import matplotlib.pyplot as plt

    results = _results()
    results.loc[results["budget"] == "4-shot", "n_train_patients"] = 8  # 8 patients next to 10: labels would touch
    fig = P.plot_sweep(results, metrics=("auc",))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["4-shot\n8", "\n\n10%\n10", "100%\n100"]
    plt.close(fig)
