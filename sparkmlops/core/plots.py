"""Figures logged with runs (matplotlib, headless). matplotlib is imported at the first figure: entry
points that draw none do not pay its import (about 1.5 s)."""

from __future__ import annotations


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def feature_importance_figure(importances, top: int = 30):
    """Horizontal bar chart of a (feature, importance) pandas frame sorted descending."""
    plt = _pyplot()
    shown = importances.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(shown) + 1)))
    ax.barh(shown["feature"], shown["importance"], color="#3b75af")
    ax.set_xlabel("importance (mean decrease in impurity, normalised)")
    ax.set_title(f"Feature importance (top {len(shown)} of {len(importances)})")
    fig.tight_layout()
    return fig


def predicted_vs_actual_figure(actual, predicted, label: str):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(actual, predicted, s=6, alpha=0.35, color="#3b75af")
    low = max(min(actual.min(), predicted.min()), 1e-3)
    high = max(actual.max(), predicted.max())
    ax.plot([low, high], [low, high], color="#c44e52", lw=1, label="perfect prediction")
    if low > 0:  # prices span orders of magnitude
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(f"actual {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.set_title(f"Predicted vs actual {label} (test split, {len(actual)} rows)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def confusion_matrix_figure(counts, class_names: list[str], label: str):
    """Counts of (true class index, predicted class index, count) rows as a matrix, true classes down."""
    import numpy as np

    plt = _pyplot()
    k = len(class_names)
    matrix = np.zeros((k, k), dtype=int)
    for true, predicted, n in counts:
        matrix[int(true), int(predicted)] += n
    size = max(4, 0.5 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black",
                )
    ax.set_xlabel(f"predicted {label}")
    ax.set_ylabel(f"actual {label}")
    ax.set_title(f"Confusion matrix (test split, {matrix.sum()} rows)")
    fig.tight_layout()
    return fig


def binary_curve_figures(truth, score, positive: str) -> dict:
    """ROC and precision-recall curves of a two-class model's score for ``positive``: {file name: figure}."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(truth, score)
    precision, recall, _ = precision_recall_curve(truth, score)
    rows = f"sample of {len(truth)} rows"
    return {
        "roc_curve.png": _curve(
            fpr,
            tpr,
            ("false positive rate", "true positive rate"),
            f"ROC curve (positive class {positive})",
            f"AUC {auc(fpr, tpr):.3f} ({rows})",
            "lower right",
            diagonal=True,
        ),
        "pr_curve.png": _curve(
            recall,
            precision,
            ("recall", "precision"),
            f"Precision-recall curve (positive class {positive})",
            rows,
            "lower left",
        ),
    }


def _curve(x, y, axes: tuple[str, str], title: str, label: str, legend: str, diagonal: bool = False):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(x, y, color="#3b75af", label=label)
    if diagonal:  # a model that guesses
        ax.plot([0, 1], [0, 1], color="#999999", lw=1, ls="--")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    ax.legend(loc=legend)
    fig.tight_layout()
    return fig


def loss_per_trial_figure(trials: list[int], losses: list, metric: str, negated: bool):
    """Loss of every trial (failed ones marked on the axis) and the best so far."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sign = -1.0 if negated else 1.0
    ok = [(t, sign * loss) for t, loss in zip(trials, losses) if loss is not None]
    failed = [t for t, loss in zip(trials, losses) if loss is None]
    if ok:
        xs, ys = zip(*ok)
        ax.scatter(xs, ys, color="#3b75af", s=24, label=f"trial validation {metric}", zorder=3)
        best, best_line = None, []
        for y in ys:
            best = y if best is None else (max(best, y) if negated else min(best, y))
            best_line.append(best)
        ax.step(xs, best_line, where="post", color="#c44e52", label="best so far")
    if failed:
        bottom = min(y for _, y in ok) if ok else 0.0
        ax.scatter(failed, [bottom] * len(failed), marker="x", color="#555555", s=40, label="failed trial")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"Validation {metric} per trial ({len(trials)} trials, {len(failed)} failed)")
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt = _pyplot()
    plt.close(fig)


def drift_figure(table, threshold: float, top: int = 40):
    """PSI per feature (drifted first, then largest), the threshold marked; drifted features in red, and
    those drifted for another reason than PSI (missing values, type) labelled with it."""
    plt = _pyplot()
    shown = table.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(shown) + 1)))
    colors = ["#c44e52" if drifted else "#3b75af" for drifted in shown["drifted"]]
    ax.barh(shown["feature"], shown["psi"], color=colors)
    for y, (psi, reason) in enumerate(zip(shown["psi"], shown["drift_reason"])):
        if reason and psi < threshold:
            ax.annotate(
                reason, (psi, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7, color="#c44e52"
            )
    ax.axvline(threshold, color="#555555", lw=1, ls="--", label=f"threshold {threshold}")
    ax.set_xlabel("population stability index (PSI)")
    ax.set_title(f"Drift per feature (top {len(shown)} of {len(table)})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
