"""Students' answers to the tasks added for issue 15, written by hand as a student would: one correct
answer per task and the plausible mistakes each check must name (imported by test_checks.py)."""
import math

import numpy as np
import torch
import torch.nn.functional as F


def _l2(v, dim=-1):
    return v / v.norm(dim=dim, keepdim=True).clamp(min=1e-12)


# ----------------------------------------------------------------- 3: BoW with tf-idf
def _tf(words, K):
    counts = torch.zeros(K, dtype=torch.float64)
    for w in words.tolist():
        counts[w] += 1
    return counts / max(len(words), 1)


def _idf(database):
    N = database.shape[0]
    df = (database > 0).sum(dim=0).double()
    return torch.where(df > 0, torch.log(N / df.clamp(min=1)), torch.zeros_like(df))


def tfidf_correct(words, database):
    return _l2(_tf(words, database.shape[1]) * _idf(database))


def tfidf_no_idf(words, database):
    return _l2(_tf(words, database.shape[1]))


def tfidf_sklearn(words, database):
    N, df = database.shape[0], (database > 0).sum(dim=0).double()
    return _l2(_tf(words, database.shape[1]) * (torch.log((1 + N) / (1 + df)) + 1))


def tfidf_occurrences(words, database):
    N, df = database.shape[0], database.sum(dim=0)
    return _l2(_tf(words, database.shape[1]) * torch.where(df > 0, torch.log(N / df.clamp(min=1)), torch.zeros_like(df)))


def tfidf_unseen_nan(words, database):
    N, df = database.shape[0], (database > 0).sum(dim=0).double()
    v = _tf(words, database.shape[1]) * torch.log(N / df)
    return v / v.norm().clamp(min=1e-12)


def tfidf_not_normalised(words, database):
    return _tf(words, database.shape[1]) * _idf(database)


def tfidf_ratio(words, database):
    N, df = database.shape[0], (database > 0).sum(dim=0).double()
    return _l2(_tf(words, database.shape[1]) * torch.where(df > 0, N / df.clamp(min=1), torch.zeros_like(df)))


def tfidf_empty_nan(words, database):
    counts = torch.bincount(words, minlength=database.shape[1]).double()
    return _l2(counts / len(words) * _idf(database))  # 0 / 0 for an image without words


def tfidf_inverted(words, database):
    N, df = database.shape[0], (database > 0).sum(dim=0).double()
    return _l2(_tf(words, database.shape[1]) * torch.where(df > 0, torch.log(df / N), torch.zeros_like(df)))


# ----------------------------------------------------------------- 4: OS-RMAC
def _os_rmac(x, L=3, kernel=math.ceil, stride=lambda kw: max(1, int(0.4 * kw)), pool="sqrt", level_l2=False, l2=True):
    v = torch.zeros(x.shape[:2], dtype=torch.float64)
    for l in range(1, L + 1):
        kw = max(1, kernel(2 * min(x.shape[-2:]) / (l + 1)))
        m = F.max_pool2d(x.double(), kw, stride=stride(kw))
        s = {"sqrt": m.pow(2).sum(dim=(2, 3)).sqrt(), "squares": m.pow(2).sum(dim=(2, 3)), "sum": m.sum(dim=(2, 3))}[pool]
        v = v + (_l2(s) if level_l2 else s)
    return _l2(v) if l2 else v


def os_rmac_correct(x, L=3):
    return _os_rmac(x, L)


def os_rmac_floor(x, L=3):
    return _os_rmac(x, L, kernel=math.floor)


def os_rmac_no_overlap(x, L=3):
    return _os_rmac(x, L, stride=lambda kw: kw)


def os_rmac_sum(x, L=3):
    return _os_rmac(x, L, pool="sum")


def os_rmac_level_l2(x, L=3):
    return _os_rmac(x, L, level_l2=True)


def os_rmac_squares(x, L=3):
    return _os_rmac(x, L, pool="squares")


def os_rmac_no_l2(x, L=3):
    return _os_rmac(x, L, l2=False)


# ----------------------------------------------------------------- 5: the 2nd-order region descriptor
def _second(x, region, elementwise=False, weighted=True, centred=False, sqrt2=False, eps=1e-6, channel=True, full=False, l2=True):
    C = x.shape[0]
    S = x.sum(dim=0)
    alpha = S / S.pow(2).sum().sqrt()
    Q = (x > 0).double().mean(dim=(1, 2))
    beta = torch.log((C * 1e-6 + Q.sum()) / (1e-6 + Q))
    f = ((beta[:, None, None] if channel else 1.0) * x)[:, region]  # (C, P)
    a = alpha[region] if weighted else torch.ones(f.shape[1], dtype=x.dtype)
    if centred:
        f = f - (f * a).sum(dim=1, keepdim=True) / a.sum()
    G = (f * a) @ f.T / a.sum()
    if elementwise:
        logG = torch.log(G)
    else:
        lam, V = torch.linalg.eigh(G)
        logG = V @ torch.diag(torch.log(lam.clamp(min=0) + eps)) @ V.T
    if full:
        return _l2(logG.reshape(-1))
    i, j = torch.triu_indices(C, C)
    v = logG[i, j] * (torch.where(i == j, 1.0, math.sqrt(2)) if sqrt2 else 1.0)
    return _l2(v) if l2 else v


def second_order_correct(x, region):
    return _second(x, region)


def second_order_elementwise_log(x, region):
    return _second(x, region, elementwise=True)


def second_order_unweighted(x, region):
    return _second(x, region, weighted=False)


def second_order_covariance(x, region):
    return _second(x, region, centred=True)


def second_order_sqrt2(x, region):
    return _second(x, region, sqrt2=True)


def second_order_no_eps(x, region):
    return _second(x, region, eps=0.0)


def second_order_no_beta(x, region):
    return _second(x, region, channel=False)


def second_order_full_matrix(x, region):
    return _second(x, region, full=True)


def second_order_no_l2(x, region):
    return _second(x, region, l2=False)


# ----------------------------------------------------------------- 6: aggregation over classes
def _cam(features, fc_weight, c):
    cam = torch.einsum("k,nkhw->nhw", fc_weight[c].to(features.dtype), features)
    return (cam / cam.amax(dim=(1, 2), keepdim=True)).clamp(min=0)


def _weighted(features, cam, unit=True):
    d = (features * cam[:, None]).sum(dim=(2, 3))
    Q = (features > 0).to(features.dtype).mean(dim=(2, 3))
    w = torch.where(Q > 0, torch.log(Q.sum(dim=1, keepdim=True) / Q.clamp(min=1e-30)), torch.zeros_like(Q))
    return _l2(d * w) if unit else d * w


def _descriptor(features, fc_weight, classes, unit=True, first=False, maps=False, ith=False, l2=True, combine=sum):
    if classes.dim() == 1:
        classes = classes[:, None] if ith else classes.expand(features.shape[0], -1)
    rows = []
    for i in range(features.shape[0]):
        x = features[i : i + 1]
        cs = classes[i, :1] if first else classes[i]
        if maps:
            rows.append(_weighted(x, sum(_cam(x, fc_weight, int(c)) for c in cs), unit)[0])
        else:
            rows.append(combine(_weighted(x, _cam(x, fc_weight, int(c)), unit)[0] for c in cs))
    v = torch.stack(rows)
    return _l2(v) if l2 else v


def cam_descriptor_correct(features, fc_weight, classes):
    return _descriptor(features, fc_weight, classes)


def cam_descriptor_unnormalised_classes(features, fc_weight, classes):
    return _descriptor(features, fc_weight, classes, unit=False)


def cam_descriptor_first_class(features, fc_weight, classes):
    return _descriptor(features, fc_weight, classes, first=True)


def cam_descriptor_summed_maps(features, fc_weight, classes):
    return _descriptor(features, fc_weight, classes, maps=True)


def cam_descriptor_ith_class(features, fc_weight, classes):
    return _descriptor(features, fc_weight, classes, ith=True)


def cam_descriptor_no_l2(features, fc_weight, classes):
    return _descriptor(features, fc_weight, classes, l2=False)


def cam_descriptor_max_over_classes(features, fc_weight, classes):
    return _descriptor(features, fc_weight, classes, combine=lambda vs: torch.stack(list(vs)).amax(dim=0))


# ----------------------------------------------------------------- 7: PCA-whitening learnt on another set
def _whiten(train, test, dim, fit_on_test=False, centre_with_test=False, power=0.5, ascending=False, l2=True, centre=True):
    X = test if fit_on_test else train
    mean = X.mean(dim=0)
    C = (X - mean).T @ (X - mean) / X.shape[0]
    lam, E = torch.linalg.eigh(C)  # ascending
    if not ascending:
        lam, E = lam.flip(0), E.flip(1)
    P = E[:, :dim] / lam[:dim] ** power
    y = (test - (test.mean(dim=0) if centre_with_test else mean if centre else 0)) @ P
    return _l2(y) if l2 else y


def whiten_correct(train, test, dim):
    return _whiten(train, test, dim)


def whiten_on_test(train, test, dim):
    return _whiten(train, test, dim, fit_on_test=True)


def whiten_test_mean(train, test, dim):
    return _whiten(train, test, dim, centre_with_test=True)


def whiten_by_eigenvalue(train, test, dim):
    return _whiten(train, test, dim, power=1.0)


def whiten_eigh_order(train, test, dim):
    return _whiten(train, test, dim, ascending=True)


def whiten_no_l2(train, test, dim):
    return _whiten(train, test, dim, l2=False)


def whiten_uncentred(train, test, dim):
    return _whiten(train, test, dim, centre=False)


def whiten_rotation_only(train, test, dim):
    return _whiten(train, test, dim, power=0.0)


# ----------------------------------------------------------------- 8: gradient descent on the contrastive loss
def _descent(W, a, b, y, margin, lr, steps, sign=-1.0, half=False, hinge=True, total=False, once=False,
             factor=2.0, swap=False, frozen=False):
    y = (1 - y if swap else y).to(W.dtype)
    d = a - b
    grad = None
    for _ in range(1 if once else steps):
        if grad is None or not frozen:
            D = (d @ W).pow(2).sum(dim=1)
            c = 0.5 * y - 0.5 * (1 - y) * ((D < margin).to(W.dtype) if hinge else 1.0)  # dL_i/dD_i
            grad = (factor if not half else 1.0) * d.T @ (c[:, None] * (d @ W))  # dD_i/dW = 2 d_i^T d_i W
            grad = grad if total else grad / len(d)
        W = W + sign * lr * grad
    return W


def descent_correct(W, a, b, y, margin, lr, steps=1):
    return _descent(W, a, b, y, margin, lr, steps)


def descent_uphill(W, a, b, y, margin, lr, steps=1):
    return _descent(W, a, b, y, margin, lr, steps, sign=1.0)


def descent_half_gradient(W, a, b, y, margin, lr, steps=1):
    return _descent(W, a, b, y, margin, lr, steps, half=True)


def descent_no_hinge(W, a, b, y, margin, lr, steps=1):
    return _descent(W, a, b, y, margin, lr, steps, hinge=False)


def descent_summed(W, a, b, y, margin, lr, steps=1):
    return _descent(W, a, b, y, margin, lr, steps, total=True)


def descent_one_step(W, a, b, y, margin, lr, steps=1):
    return _descent(W, a, b, y, margin, lr, steps, once=True)


def descent_double_gradient(W, a, b, y, margin, lr, steps=1):
    return _descent(W, a, b, y, margin, lr, steps, factor=4.0)


def descent_swapped_labels(W, a, b, y, margin, lr, steps=1):
    return _descent(W, a, b, y, margin, lr, steps, swap=True)


def descent_frozen_gradient(W, a, b, y, margin, lr, steps=1):
    return _descent(W, a, b, y, margin, lr, steps, frozen=True)


# ----------------------------------------------------------------- 10: one benchmark row
def _row(query_maps, db_maps, positives, p=3.0, pool="gem", l2=True, descending=True, finite=False):
    def describe(x):
        v = {"gem": x.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1 / p), "max": x.amax(dim=(2, 3)), "avg": x.mean(dim=(2, 3))}[pool]
        return _l2(v) if l2 else v
    S = describe(query_maps) @ describe(db_maps).T
    order = torch.argsort(S, dim=1, descending=descending, stable=True)
    aps, p1 = [], []
    for i, ok in enumerate(positives):
        hit = np.isin(order[i].numpy(), ok)
        ranks = np.flatnonzero(hit)
        ap = 0.0
        for j, r in enumerate(ranks):
            after = (j + 1) / (r + 1)
            ap += after if finite else ((1.0 if r == 0 else j / r) + after) / 2
        aps.append(ap / len(ok))
        p1.append(float(hit[0]))
    return torch.tensor([np.mean(aps), np.mean(p1)])


def row_correct(query_maps, db_maps, positives, p=3.0):
    return _row(query_maps, db_maps, positives, p)


def row_unnormalised(query_maps, db_maps, positives, p=3.0):
    return _row(query_maps, db_maps, positives, p, l2=False)


def row_ascending(query_maps, db_maps, positives, p=3.0):
    return _row(query_maps, db_maps, positives, p, descending=False)


def row_mac(query_maps, db_maps, positives, p=3.0):
    return _row(query_maps, db_maps, positives, p, pool="max")


def row_average(query_maps, db_maps, positives, p=3.0):
    return _row(query_maps, db_maps, positives, p, pool="avg")


def row_finite_ap(query_maps, db_maps, positives, p=3.0):
    return _row(query_maps, db_maps, positives, p, finite=True)


CORRECT = {
    "bow_tfidf": tfidf_correct, "os_rmac": os_rmac_correct, "second_order": second_order_correct,
    "cam_descriptor": cam_descriptor_correct, "pca_whiten": whiten_correct, "gradient_descent": descent_correct,
    "benchmark_row": row_correct,
}

WRONG = [
    ("bow_tfidf", tfidf_no_idf, "has no idf weights"),
    ("bow_tfidf", tfidf_sklearn, "scikit-learn's smoothed idf"),
    ("bow_tfidf", tfidf_occurrences, "counts every occurrence of word k"),
    ("bow_tfidf", tfidf_unseen_nan, "gives NaN for a word that no database image contains"),
    ("bow_tfidf", tfidf_not_normalised, "is not L2-normalised"),
    ("bow_tfidf", tfidf_inverted, "the negated idf"),
    ("bow_tfidf", tfidf_ratio, "weighs by N / N_k"),
    ("bow_tfidf", tfidf_empty_nan, "divides by T = 0 for an image without words"),
    ("os_rmac", os_rmac_floor, "rounds the window down"),
    ("os_rmac", os_rmac_no_overlap, "moves the window by kw"),
    ("os_rmac", os_rmac_sum, "sums the pooled values"),
    ("os_rmac", os_rmac_level_l2, "L2-normalises each level"),
    ("os_rmac", os_rmac_squares, "forgets the square root of the sum of squares"),
    ("os_rmac", os_rmac_no_l2, "is not L2-normalised at the end"),
    ("second_order", second_order_elementwise_log, "takes the logarithm of each entry of G"),
    ("second_order", second_order_unweighted, "without the spatial weights"),
    ("second_order", second_order_covariance, "subtracts the region's mean"),
    ("second_order", second_order_sqrt2, "by sqrt(2)"),
    ("second_order", second_order_no_eps, "takes log(lambda) of zero eigenvalues"),
    ("second_order", second_order_no_beta, "has no channel weights"),
    ("second_order", second_order_full_matrix, "keeps the whole C x C matrix"),
    ("second_order", second_order_no_l2, "is not L2-normalised"),
    ("cam_descriptor", cam_descriptor_unnormalised_classes, "sums the class vectors before L2-normalising each"),
    ("cam_descriptor", cam_descriptor_first_class, "uses the first class only"),
    ("cam_descriptor", cam_descriptor_summed_maps, "sums the CAMs first"),
    ("cam_descriptor", cam_descriptor_ith_class, "with the i-th class only"),
    ("cam_descriptor", cam_descriptor_no_l2, "is not L2-normalised at the end"),
    ("cam_descriptor", cam_descriptor_max_over_classes, "takes the maximum over the classes"),
    ("pca_whiten", whiten_on_test, "is learnt on the test set"),
    ("pca_whiten", whiten_test_mean, "centres the test rows with their own mean"),
    ("pca_whiten", whiten_by_eigenvalue, "divides by the eigenvalues"),
    ("pca_whiten", whiten_eigh_order, "keeps the directions of smallest variance"),
    ("pca_whiten", whiten_no_l2, "is not L2-normalised"),
    ("pca_whiten", whiten_uncentred, "does not subtract the training mean"),
    ("pca_whiten", whiten_rotation_only, "is a PCA rotation without whitening"),
    ("gradient_descent", descent_uphill, "steps uphill"),
    ("gradient_descent", descent_half_gradient, "has half the gradient"),
    ("gradient_descent", descent_no_hinge, "pushes apart the non-matching pairs beyond the margin"),
    ("gradient_descent", descent_summed, "sums the gradient over the pairs"),
    ("gradient_descent", descent_one_step, "takes one step whatever steps says"),
    ("gradient_descent", descent_double_gradient, "has twice the gradient"),
    ("gradient_descent", descent_swapped_labels, "swaps the labels"),
    ("gradient_descent", descent_frozen_gradient, "reuses the first gradient at every step"),
    ("benchmark_row", row_unnormalised, "without L2-normalising them"),
    ("benchmark_row", row_ascending, "ranks the least similar images first"),
    ("benchmark_row", row_mac, "uses max pooling (MAC)"),
    ("benchmark_row", row_finite_ap, "finite-sum AP"),
    ("benchmark_row", row_average, "uses average pooling whatever p says"),
]
