"""Reference values for the evaluation metrics (stages/tests/metrics_reference.rs runs this).

usage: metrics_reference.py OUT_DIR

Writes .npy files into OUT_DIR:
- roc{k}_scores.npy / _labels.npy: random score sets with many ties (f64 and f32);
  roc{k}_fpr/_tpr/_thr.npy: sklearn.metrics.roc_curve(drop_intermediate=True);
  roc{k}_tar.npy: the IJB reference's TAR@FAR pick (eval_ijbc.py) for 1e-6..1e-1;
  roc{k}_auc.npy: sklearn.metrics.auc(fpr, tpr).
- ver{k}_dist.npy / _issame.npy: random pair distances with ties on the threshold grids;
  ver{k}_out.npy: [acc mean, acc std, mean best threshold, val, val std, far] + 10 fold
  accuracies + 10 fold thresholds, by a plain NumPy re-implementation of insightface's
  verification.py (calculate_roc / calculate_val).
- np_sum{k}.npy / np_sum{k}_out.npy: np.sum of arrays of awkward lengths (pairwise summation).
- vemb{k}_views.npy (<f4, [V, 2P, D]) / _issame.npy: raw network outputs of both views of P pairs;
  vemb{k}_xnorm.npy, _dist.npy: insightface verification.py's test() on them (views copied into
  f64 arrays and summed, _xnorm = mean raw norm over both views, sklearn normalize, squared L2).
- ijb{k}_feats.npy (<f4) / _tids / _mids / _p1 / _p2 / _labels: image features of an IJB-style
  release, with pairs whose scores are closer than f32 can tell apart; ijb{k}_score.npy:
  eval_ijbc.py's image2template_feature + verification (f64), ijb{k}_tar.npy: TAR@FAR on them.
"""
import os
import sys

import numpy as np
import sklearn.preprocessing
from scipy import interpolate
from sklearn.metrics import auc, roc_curve
from sklearn.model_selection import KFold

FAR_TARGETS = [10 ** -6, 10 ** -5, 10 ** -4, 10 ** -3, 10 ** -2, 10 ** -1]


def save(out, name, arr):
    np.save(os.path.join(out, name + ".npy"), arr)


def tar_at_far(fpr, tpr):
    # eval_ijbc.py: flip, then the index minimising (|fpr - x|, index).
    fpr = np.flipud(fpr)
    tpr = np.flipud(tpr)
    row = []
    for x in FAR_TARGETS:
        _, min_index = min(list(zip(abs(fpr - x), range(len(fpr)))))
        row.append(tpr[min_index])
    return np.array(row, dtype=np.float64)


def roc_cases(rng):
    cases = []
    # Coarse f64 scores: many ties.
    n = 5000
    cases.append((np.round(rng.normal(size=n), 2), rng.random(n) < 0.1))
    # f32 scores rounded to 1e-3, IJB-like imbalance.
    n = 200_000
    lab = rng.random(n) < 0.01
    s = rng.normal(size=n) * 0.1 + lab * 0.25
    cases.append((np.round(s, 3).astype(np.float32), lab))
    # Continuous f64 scores (AUC sums more than 8192 terms pairwise).
    n = 60_000
    lab = rng.random(n) < 0.3
    cases.append((rng.normal(size=n) + lab * 1.0, lab))
    # Integer scores, heavy ties.
    n = 1000
    cases.append((rng.integers(0, 5, size=n).astype(np.float64), rng.random(n) < 0.5))
    # Two points; all equal; three points.
    cases.append((np.array([0.5, 0.5]), np.array([True, False])))
    cases.append((np.full(50, 0.25), rng.random(50) < 0.5))
    cases.append((np.array([0.3, 0.1, 0.2]), np.array([False, True, True])))
    # Positives first in a tie run and negative zeros.
    cases.append((np.array([0.0, -0.0, 0.0, 1.0, -1.0, 0.0]), np.array([True, False, True, False, True, False])))
    return cases


def calculate_accuracy(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict_issame, actual_issame))
    tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
    return float(tp + tn) / dist.size


def calculate_val_far(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    true_accept = np.sum(np.logical_and(predict_issame, actual_issame))
    false_accept = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    n_same = np.sum(actual_issame)
    n_diff = np.sum(np.logical_not(actual_issame))
    return float(true_accept) / float(n_same), float(false_accept) / float(n_diff)


def slinear(x, y, x0):
    # interp1d(x, y, kind='slinear') as SciPy computed it before it began rejecting repeated x
    # (the reference's FAR curve always repeats values): a degree-1 B-spline, knots [x0, x, x_last],
    # coefficients y.
    t = np.r_[x[0], x, x[-1]]
    return interpolate.BSpline.construct_fast(t, np.ascontiguousarray(y, dtype=np.float64), 1)(x0)


def ten_fold(dist, issame, nrof_folds=10, far_target=1e-3):
    k_fold = KFold(n_splits=nrof_folds, shuffle=False)
    indices = np.arange(len(dist))
    thresholds = np.arange(0, 4, 0.01)
    accuracy = np.zeros(nrof_folds)
    best = np.zeros(nrof_folds)
    for fold_idx, (train_set, test_set) in enumerate(k_fold.split(indices)):
        acc_train = np.zeros(len(thresholds))
        for threshold_idx, threshold in enumerate(thresholds):
            acc_train[threshold_idx] = calculate_accuracy(threshold, dist[train_set], issame[train_set])
        best_threshold_index = np.argmax(acc_train)
        best[fold_idx] = thresholds[best_threshold_index]
        accuracy[fold_idx] = calculate_accuracy(thresholds[best_threshold_index], dist[test_set], issame[test_set])
    thresholds = np.arange(0, 4, 0.001)
    val = np.zeros(nrof_folds)
    far = np.zeros(nrof_folds)
    for fold_idx, (train_set, test_set) in enumerate(k_fold.split(indices)):
        far_train = np.zeros(len(thresholds))
        for threshold_idx, threshold in enumerate(thresholds):
            _, far_train[threshold_idx] = calculate_val_far(threshold, dist[train_set], issame[train_set])
        if np.max(far_train) >= far_target:
            threshold = slinear(far_train, thresholds, far_target)
        else:
            threshold = 0.0
        val[fold_idx], far[fold_idx] = calculate_val_far(threshold, dist[test_set], issame[test_set])
    head = [np.mean(accuracy), np.std(accuracy), np.mean(best), np.mean(val), np.std(val), np.mean(far)]
    return np.concatenate([np.array(head), accuracy, best])


def ver_cases(rng):
    cases = []
    for n, sep in [(6000, 1.0), (7000, 0.4), (23, 0.8), (600, 2.5)]:
        # Alternating labels for the tiny set so that every 2-3 pair fold has both classes (the
        # reference divides by zero otherwise).
        issame = rng.random(n) < 0.5 if n > 100 else np.arange(n) % 2 == 0
        d = np.clip(rng.normal(size=n) * 0.35 + 1.4 - issame * sep, 0, 3.99)
        # A third of the distances sit exactly on the 0.01 grid and a third on the 0.001 grid, where
        # the strict `<` matters.
        grid1 = np.arange(0, 4, 0.01)
        grid2 = np.arange(0, 4, 0.001)
        k = rng.integers(0, 3, size=n)
        d = np.where(k == 0, grid1[np.clip(np.round(d / 0.01).astype(int), 0, 399)], d)
        d = np.where(k == 1, grid2[np.clip(np.round(d / 0.001).astype(int), 0, 3999)], d)
        cases.append((d.astype(np.float64), issame))
    return cases


def verification_test_embeddings(views):
    """insightface verification.py test(): the f32 network outputs go into np.zeros (f64) arrays."""
    embeddings_list = []
    for v in views:
        e = np.zeros((v.shape[0], v.shape[1]))
        e[:, :] = v
        embeddings_list.append(e)
    _xnorm = 0.0
    _xnorm_cnt = 0
    for embed in embeddings_list:
        for i in range(embed.shape[0]):
            _xnorm += np.linalg.norm(embed[i])
            _xnorm_cnt += 1
    _xnorm /= _xnorm_cnt
    embeddings = embeddings_list[0].copy()
    for e in embeddings_list[1:]:
        embeddings = embeddings + e
    embeddings = sklearn.preprocessing.normalize(embeddings)
    diff = np.subtract(embeddings[0::2], embeddings[1::2])
    return _xnorm, np.sum(np.square(diff), 1)


def vemb_cases(rng):
    cases = []
    for views, pairs, dim in [(2, 400, 64), (1, 300, 512), (2, 37, 7)]:
        issame = np.arange(pairs) % 2 == 0
        base = rng.normal(size=(pairs, dim)).astype(np.float32)
        x = np.empty((views, 2 * pairs, dim), dtype=np.float32)
        for v in range(views):
            noise = rng.normal(size=(2 * pairs, dim)).astype(np.float32)
            a = base[np.arange(2 * pairs) // 2]
            b = rng.normal(size=(2 * pairs, dim)).astype(np.float32)
            same = np.repeat(issame, 2)[:, None]
            x[v] = (np.where(same, a, b) * 3 + noise) * rng.uniform(5, 30)
        cases.append((x, issame))
    return cases


def ijb_cases(rng):
    """Random 3-d features plus templates 1 (1,0,0), 2 (x,y,0) and 3 (x,y,1e-4): the pairs (1,2)
    genuine and (1,3) impostor score 0.72570168419 and 0.72570168056, one f32 value."""
    import importlib.util

    bench = os.path.join(os.path.dirname(__file__), "..", "..", "benches", "ijbc_reference.py")
    spec = importlib.util.spec_from_file_location("ijbc_reference", bench)
    ijb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ijb)
    x, y = np.float32(0.7257017), np.float32(0.6880095)
    n, dim = 3000, 3
    feats = rng.normal(size=(n, dim)).astype(np.float32)
    feats[:3] = np.array([[1, 0, 0], [x, y, 0], [x, y, 1e-4]], dtype=np.float32)
    tids = np.concatenate([[1, 2, 3], rng.integers(4, 600, size=n - 3)]).astype(np.int64)
    mids = np.concatenate([[1, 2, 3], rng.integers(4, 1500, size=n - 3)]).astype(np.int64)
    m = 200_000
    p1 = np.concatenate([[1, 1], rng.integers(4, 600, size=m)]).astype(np.int64)
    p2 = np.concatenate([[2, 3], rng.integers(4, 600, size=m)]).astype(np.int64)
    p1[2:] = np.where(np.isin(p1[2:], tids), p1[2:], 4 + (p1[2:] % 7))
    p2[2:] = np.where(np.isin(p2[2:], tids), p2[2:], 5 + (p2[2:] % 7))
    present = np.isin(p1, tids) & np.isin(p2, tids)
    p1, p2 = p1[present], p2[present]
    labels = np.zeros(len(p1), dtype=np.uint8)
    labels[0] = 1
    labels[2:] = rng.random(len(p1) - 2) < 0.001
    tf, ut = ijb.image2template_feature(feats, tids, mids)
    score = ijb.verification(tf, ut, p1, p2)
    fpr, tpr, _ = roc_curve(labels, score)
    return [(feats, tids, mids, p1, p2, labels, score, tar_at_far(fpr, tpr))]


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(20250611)
    for k, (s, lab) in enumerate(roc_cases(rng)):
        fpr, tpr, thr = roc_curve(lab.astype(np.int64), s, drop_intermediate=True)
        save(out, f"roc{k}_scores", s)
        save(out, f"roc{k}_labels", lab.astype(np.uint8))
        save(out, f"roc{k}_fpr", fpr)
        save(out, f"roc{k}_tpr", tpr)
        save(out, f"roc{k}_thr", thr)
        save(out, f"roc{k}_tar", tar_at_far(fpr, tpr))
        save(out, f"roc{k}_auc", np.array([auc(fpr, tpr)]))
    for k, (d, issame) in enumerate(ver_cases(rng)):
        save(out, f"ver{k}_dist", d)
        save(out, f"ver{k}_issame", issame.astype(np.uint8))
        save(out, f"ver{k}_out", ten_fold(d, issame))
    for k, n in enumerate([0, 1, 7, 8, 9, 127, 128, 129, 1000, 8193, 100_003]):
        a = rng.normal(size=n) * 10.0 ** rng.integers(-5, 5, size=n)
        save(out, f"np_sum{k}", a)
        save(out, f"np_sum{k}_out", np.array([np.sum(a)]))
    for k, (views, issame) in enumerate(vemb_cases(rng)):
        xnorm, dist = verification_test_embeddings(views)
        save(out, f"vemb{k}_views", views)
        save(out, f"vemb{k}_issame", issame.astype(np.uint8))
        save(out, f"vemb{k}_xnorm", np.array([xnorm]))
        save(out, f"vemb{k}_dist", dist)
    for k, case in enumerate(ijb_cases(rng)):
        for name, arr in zip(["feats", "tids", "mids", "p1", "p2", "labels", "score", "tar"], case):
            save(out, f"ijb{k}_{name}", arr)


if __name__ == "__main__":
    main()
