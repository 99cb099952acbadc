"""Metrics of the examples, in NumPy (no sklearn)."""
import numpy as np


def roc_auc(scores, positive):
    """Area under the ROC curve: the chance a positive scores above a negative
    (ties count half), from the ranks of the scores (Mann-Whitney U)."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average rank of each group of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def roc_curve(scores, positive):
    """(false positive rates, true positive rates) over all thresholds."""
    order = np.argsort(-np.asarray(scores))
    hits = np.asarray(positive, bool)[order]
    tpr = np.r_[0, np.cumsum(hits) / hits.sum()]
    fpr = np.r_[0, np.cumsum(~hits) / (~hits).sum()]
    return fpr, tpr


def per_class_iou(pred, truth, classes):
    """Intersection over union of each class's pixels, over the whole set."""
    return np.array([((pred == c) & (truth == c)).sum() / max(((pred == c) | (truth == c)).sum(), 1)
                     for c in range(classes)])


def box_iou(a, b):
    """IoU of matching rows of (x1, y1, x2, y2) boxes."""
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])
    inter = w * h
    return inter / (area(a) + area(b) - inter)
