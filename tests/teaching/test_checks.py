"""Checks that teach: a correct answer passes, each plausible wrong answer gets its own message.

The wrong answers below are written the way a student would write them, independently of the
mistake models in retrievalkit.teaching.checks.
"""
import inspect
import math
import pickle

import numpy as np
import pytest
import torch

from new_task_answers import CORRECT as NEW_CORRECT
from new_task_answers import WRONG as NEW_WRONG
from retrievalkit.teaching import checks
from retrievalkit.teaching.checks import (benchmark, cam, crow, encoding, finetuning, manifolds, measuring, pooling,
                                          postprocessing, rmac)

NOTEBOOK_MODULES = [pooling, measuring, encoding, rmac, crow, cam, postprocessing, finetuning, manifolds, benchmark]


# ----------------------------------------------------------------- window pooling (2x2, stride 2)
def wp_correct(x, kind):
    w = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2)
    return {"max": w.amax(dim=(1, 3)), "avg": w.mean(dim=(1, 3)), "sum": w.sum(dim=(1, 3))}[kind]


def wp_always_max(x, kind):
    return x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).amax(dim=(1, 3))


def wp_always_avg(x, kind):
    return torch.nn.functional.avg_pool2d(x[None, None], 2)[0, 0]


def wp_stride_one(x, kind):
    f = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
    out = f(x[None, None], 2, stride=1)[0, 0]
    return out * 4 if kind == "sum" else out


def wp_avg_is_sum(x, kind):
    w = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2)
    return w.amax(dim=(1, 3)) if kind == "max" else w.sum(dim=(1, 3))


# ----------------------------------------------------------------- MAC
def mac_correct(x):
    return x.flatten(-2).max(dim=-1).values


def mac_mean(x):
    return x.mean(dim=(-2, -1))


def mac_sum(x):
    return x.sum(dim=(-2, -1))


def mac_rows_then_mean(x):
    return x.max(dim=-2).values.mean(dim=-1)


def mac_abs(x):
    return x.abs().flatten(-2).max(-1).values


# ----------------------------------------------------------------- SPoC
def _gauss(H, W, cy, cx, sigma, two=True):
    i = torch.arange(H, dtype=torch.float64)[:, None] - cy
    j = torch.arange(W, dtype=torch.float64)[None, :] - cx
    return torch.exp(-(i**2 + j**2) / ((2 if two else 1) * sigma**2))


def spoc_correct(x):
    H, W = x.shape[-2:]
    return (x * _gauss(H, W, (H - 1) / 2, (W - 1) / 2, min(H, W) / 6)).sum(dim=(-2, -1))


def spoc_no_prior(x):
    return x.sum(dim=(-2, -1))


def spoc_centre_half(x):
    H, W = x.shape[-2:]
    return (x * _gauss(H, W, H / 2, W / 2, min(H, W) / 6)).sum(dim=(-2, -1))


def spoc_sigma_third(x):
    H, W = x.shape[-2:]
    return (x * _gauss(H, W, (H - 1) / 2, (W - 1) / 2, min(H, W) / 3)).sum(dim=(-2, -1))


def spoc_no_two(x):
    H, W = x.shape[-2:]
    return (x * _gauss(H, W, (H - 1) / 2, (W - 1) / 2, min(H, W) / 6, two=False)).sum(dim=(-2, -1))


def spoc_mean(x):
    return x.mean(dim=(-2, -1))


# ----------------------------------------------------------------- GeM
def gem_correct(x, p=3.0, eps=1e-6):
    return torch.mean(torch.clamp(x, min=eps) ** p, dim=(-2, -1)) ** (1 / p)


def gem_max(x, p=3.0, eps=1e-6):
    return torch.amax(x, dim=(-2, -1))


def gem_no_root(x, p=3.0, eps=1e-6):
    return torch.mean(torch.clamp(x, min=eps) ** p, dim=(-2, -1))


def gem_sum(x, p=3.0, eps=1e-6):
    return torch.sum(torch.clamp(x, min=eps) ** p, dim=(-2, -1)) ** (1 / p)


def gem_no_clamp(x, p=3.0, eps=1e-6):
    return torch.mean(x**p, dim=(-2, -1)) ** (1 / p)


def gem_ignores_p(x, p=3.0, eps=1e-6):
    return torch.mean(torch.clamp(x, min=eps), dim=(-2, -1))


# ----------------------------------------------------------------- AP
def ap_correct(positive_ranks, n_positives):
    ap = 0.0
    for j, r in enumerate(sorted(positive_ranks)):
        p0 = 1.0 if r == 0 else j / r
        ap += (p0 + (j + 1) / (r + 1)) / (2 * n_positives)
    return ap


def ap_sklearn(positive_ranks, n_positives):
    return sum((j + 1) / (r + 1) for j, r in enumerate(sorted(positive_ranks))) / n_positives


def ap_found(positive_ranks, n_positives):
    return ap_correct(positive_ranks, len(positive_ranks))


def ap_unsorted(positive_ranks, n_positives):
    ap = 0.0
    for j, r in enumerate(positive_ranks):
        p0 = 1.0 if r == 0 else j / r
        ap += (p0 + (j + 1) / (r + 1)) / (2 * n_positives)
    return ap


def ap_one_based(positive_ranks, n_positives):
    return ap_correct([r + 1 for r in positive_ranks], n_positives)


# ----------------------------------------------------------------- mAP
def _ap_of(row, ok, junk):
    kept = [i for i in row if i not in junk]
    return ap_correct([k for k, i in enumerate(kept) if i in ok], len(ok))


def map_correct(ranks, gnd):
    aps = [_ap_of(list(r), set(g["ok"]), set(g.get("junk", []))) for r, g in zip(np.asarray(ranks), gnd) if g["ok"]]
    return float(np.mean(aps))


def map_counts_junk(ranks, gnd):
    aps = [_ap_of(list(r), set(g["ok"]), set()) for r, g in zip(np.asarray(ranks), gnd) if g["ok"]]
    return float(np.mean(aps))


def map_zero_for_empty(ranks, gnd):
    aps = [_ap_of(list(r), set(g["ok"]), set(g["junk"])) if g["ok"] else 0.0 for r, g in zip(np.asarray(ranks), gnd)]
    return float(np.mean(aps))


def map_junk_positive(ranks, gnd):
    aps = [_ap_of(list(r), set(g["ok"]) | set(g["junk"]), set()) for r, g in zip(np.asarray(ranks), gnd) if g["ok"]]
    return float(np.mean(aps))


def map_sklearn(ranks, gnd):
    aps = []
    for r, g in zip(np.asarray(ranks), gnd):
        if g["ok"]:
            kept = [i for i in r if i not in set(g["junk"])]
            aps.append(ap_sklearn([k for k, i in enumerate(kept) if i in set(g["ok"])], len(g["ok"])))
    return float(np.mean(aps))


# ----------------------------------------------------------------- VLAD (notebook 3)
def _vlad_sums(X, centers, residual=lambda r: r, reduce="sum"):
    nearest = torch.cdist(X, centers).argmin(dim=1)
    V = torch.zeros_like(centers)
    for k in range(len(centers)):
        mine = nearest == k
        if mine.any():
            r = residual(X[mine] - centers[k])
            V[k] = r.sum(dim=0) if reduce == "sum" else r.mean(dim=0)
    return V


def _vlad_finish(V, power, intra):
    if power is not None:
        V = torch.sign(V) * V.abs() ** power
    if intra:
        V = V / V.norm(dim=1, keepdim=True).clamp(min=1e-12)
    v = V.flatten()
    return v / v.norm()


def vlad_correct(X, centers, power=None, intra=False):
    return _vlad_finish(_vlad_sums(X, centers), power, intra)


def vlad_every_centre(X, centers, power=None, intra=False):
    V = torch.stack([(X - c).sum(dim=0) for c in centers])
    return _vlad_finish(V, power, intra)


def vlad_flipped(X, centers, power=None, intra=False):
    return _vlad_finish(-_vlad_sums(X, centers), power, intra)


def vlad_dimension_major(X, centers, power=None, intra=False):
    v = _vlad_finish(_vlad_sums(X, centers), power, intra)
    return v.reshape(len(centers), -1).T.flatten()


def vlad_no_l2(X, centers, power=None, intra=False):
    V = _vlad_sums(X, centers)
    if power is not None:
        V = torch.sign(V) * V.abs() ** power
    if intra:
        V = V / V.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return V.flatten()


def vlad_mean(X, centers, power=None, intra=False):
    return _vlad_finish(_vlad_sums(X, centers, reduce="mean"), power, intra)


def vlad_intra_first(X, centers, power=None, intra=False):
    V = _vlad_sums(X, centers)
    if intra:
        V = V / V.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return _vlad_finish(V, power, False)


def vlad_unit_residuals(X, centers, power=None, intra=False):
    if not intra:
        return vlad_correct(X, centers, power)
    return _vlad_finish(_vlad_sums(X, centers, residual=lambda r: r / r.norm(dim=1, keepdim=True)), power, False)


def vlad_unsigned_power(X, centers, power=None, intra=False):
    V = _vlad_sums(X, centers)
    return _vlad_finish(V if power is None else V.abs() ** power, None, intra)


def vlad_nan_for_empty(X, centers, power=None, intra=False):
    V = _vlad_sums(X, centers)
    if power is not None:
        V = torch.sign(V) * V.abs() ** power
    if intra:
        V = V / V.norm(dim=1, keepdim=True)
    return (V / V.norm()).flatten()


# ----------------------------------------------------------------- R-MAC regions and R-MAC (notebook 4)
def _long_side_extra(H, W, fewer=False):
    w = min(H, W)
    overlaps = [(w * w - w * (max(H, W) - w) / (s - 1)) / (w * w) for s in range(2, 8)]
    return int(np.argmin([abs(o - 0.4) for o in overlaps])) + (0 if fewer else 1)


def _grid(H, W, L, d, side, corners):
    out = []
    for l in range(1, L + 1):
        wl = side(min(H, W), l)
        ny, nx = l + (d if H > W else 0), l + (d if W > H else 0)
        out += [(int(y), int(x), wl, wl) for y in corners(H, wl, ny) for x in corners(W, wl, nx)]
    return out


def _floor_linspace(size, wl, n):
    return np.floor(np.linspace(0, size - wl, n))


def regions_correct(H, W, L=3):
    d = 0 if H == W else _long_side_extra(H, W)
    return _grid(H, W, L, d, lambda w, l: 2 * w // (l + 1), _floor_linspace)


def regions_integer_step(H, W, L=3):
    d = 0 if H == W else _long_side_extra(H, W)
    return _grid(H, W, L, d, lambda w, l: 2 * w // (l + 1),
                 lambda size, wl, n: [0] if n == 1 else [i * ((size - wl) // (n - 1)) for i in range(n)])


def regions_one_based(H, W, L=3):
    return [(y + 1, x + 1, h, w) for y, x, h, w in regions_correct(H, W, L)]


def regions_square_only(H, W, L=3):
    return _grid(H, W, L, 0, lambda w, l: 2 * w // (l + 1), _floor_linspace)


def regions_one_too_few(H, W, L=3):
    d = 0 if H == W else _long_side_extra(H, W, fewer=True)
    return _grid(H, W, L, d, lambda w, l: 2 * w // (l + 1), _floor_linspace)


def regions_ceil(H, W, L=3):
    d = 0 if H == W else _long_side_extra(H, W)
    return _grid(H, W, L, d, lambda w, l: math.ceil(2 * w / (l + 1)), _floor_linspace)


def regions_xywh(H, W, L=3):
    return [(x, y, w, h) for y, x, h, w in regions_correct(H, W, L)]


def _l2n(v):
    return v / v.norm(dim=-1, keepdim=True)


def _rmac(x, L, region=lambda r: r.amax(dim=(-2, -1)), per_region=_l2n, final=_l2n, extra=0, trim=0):
    v = extra
    for y, x0, h, w in regions_correct(x.shape[-2], x.shape[-1], L):
        v = v + per_region(region(x[:, :, y : y + h - trim, x0 : x0 + w - trim]))
    return final(v)


def rmac_correct(x, L=3):
    return _rmac(x, L)


def rmac_no_region_l2(x, L=3):
    return _rmac(x, L, per_region=lambda m: m)


def rmac_no_final_l2(x, L=3):
    return _rmac(x, L, final=lambda v: v)


def rmac_global_term(x, L=3):
    return _rmac(x, L, extra=_l2n(x.amax(dim=(-2, -1))))


def rmac_average(x, L=3):
    return _rmac(x, L, region=lambda r: r.mean(dim=(-2, -1)))


def rmac_pyretri(x, L=3):
    return _rmac(x, L, trim=1)


# ----------------------------------------------------------------- CroW weights (notebook 5)
def spatial_correct(x, a=2, b=2):
    S = x.sum(dim=1)
    z = (S**a).sum(dim=(1, 2), keepdim=True) ** (1 / a)
    z[z == 0] = 1
    return (S / z) ** (1 / b)


def spatial_no_root(x, a=2, b=2):
    return spatial_correct(x, a, 1)


def spatial_l1(x, a=2, b=2):
    S = x.sum(dim=1)
    z = S.sum(dim=(1, 2), keepdim=True)
    return (S / torch.where(z > 0, z, 1.0)) ** (1 / b)


def spatial_max(x, a=2, b=2):
    S = x.sum(dim=1)
    z = S.amax(dim=(1, 2), keepdim=True)
    return (S / torch.where(z > 0, z, 1.0)) ** (1 / b)


def spatial_no_a_root(x, a=2, b=2):
    S = x.sum(dim=1)
    z = (S**a).sum(dim=(1, 2), keepdim=True)
    return (S / torch.where(z > 0, z, 1.0)) ** (1 / b)


def spatial_batch_norm(x, a=2, b=2):
    S = x.sum(dim=1)
    return (S / (S**a).sum() ** (1 / a)) ** (1 / b)


def spatial_nan(x, a=2, b=2):
    S = x.sum(dim=1)
    return (S / (S**a).sum(dim=(1, 2), keepdim=True) ** (1 / a)) ** (1 / b)


def _Q(x):
    return (x > 0).float().mean(dim=(2, 3))


def channel_correct(x):
    Q = _Q(x)
    w = torch.log(Q.sum(dim=1, keepdim=True) / Q)
    w[Q == 0] = 0
    return w


def channel_flipped(x):
    return -channel_correct(x)


def channel_pyretri_eps(x):
    Q = _Q(x) + 1e-6
    return torch.log(Q.sum(dim=1, keepdim=True) / Q)


def channel_infinite(x):
    Q = _Q(x)
    return torch.log(Q.sum(dim=1, keepdim=True) / Q)


def channel_zeros(x):
    Q = (x == 0).float().mean(dim=(2, 3))
    w = torch.log(Q.sum(dim=1, keepdim=True) / Q)
    w[Q == 0] = 0
    return w


def channel_batch(x):
    Q = (x > 0).float().mean(dim=(0, 2, 3))
    w = torch.log(Q.sum() / Q)
    w[Q == 0] = 0
    return w.expand(x.shape[0], -1)


def channel_log10(x):
    Q = _Q(x)
    w = torch.log10(Q.sum(dim=1, keepdim=True) / Q)
    w[Q == 0] = 0
    return w


def channel_mean_activation(x):
    Q = x.mean(dim=(2, 3))
    w = torch.log(Q.sum(dim=1, keepdim=True) / Q)
    w[Q == 0] = 0
    return w


# ----------------------------------------------------------------- CAM and the class-weighted vector (notebook 6)
def _raw_cam(features, w):
    return (w[None, :, None, None] * features).sum(dim=1)


def _per_image_max(cam):
    return cam.flatten(1).max(dim=1).values[:, None, None]


def cam_correct(features, fc_weight, c):
    cam = _raw_cam(features, fc_weight[c])
    return (cam / _per_image_max(cam)).clamp(min=0)


def cam_relu_first(features, fc_weight, c):
    cam = torch.relu(_raw_cam(features, fc_weight[c]))
    return cam / _per_image_max(cam)


def cam_relu_first_guarded(features, fc_weight, c):
    cam = torch.relu(_raw_cam(features, fc_weight[c]))
    peak = _per_image_max(cam)
    return cam / torch.where(peak > 0, peak, 1.0)


def cam_unnormalised(features, fc_weight, c):
    return torch.relu(_raw_cam(features, fc_weight[c]))


def cam_no_relu(features, fc_weight, c):
    cam = _raw_cam(features, fc_weight[c])
    return cam / _per_image_max(cam)


def cam_column(features, fc_weight, c):
    cam = _raw_cam(features, fc_weight[:, c])
    return (cam / _per_image_max(cam)).clamp(min=0)


def cam_all_classes(features, fc_weight, c):
    cam = torch.einsum("ck,nkhw->nhw", fc_weight, features)
    return (cam / _per_image_max(cam)).clamp(min=0)


def cam_batch_max(features, fc_weight, c):
    cam = _raw_cam(features, fc_weight[c])
    return (cam / cam.max()).clamp(min=0)


def _crow_weights(x):
    Q = (x > 0).double().mean(dim=(2, 3))
    return torch.nan_to_num(torch.log(Q.sum(dim=1, keepdim=True) / Q), posinf=0.0)


def weighted_correct(features, cam):
    d = (features * cam[:, None]).sum(dim=(2, 3)) * _crow_weights(features)
    return d / d.norm(dim=1, keepdim=True)


def weighted_no_channel_weights(features, cam):
    return _l2n((features * cam[:, None]).sum(dim=(2, 3)))


def weighted_no_l2(features, cam):
    return (features * cam[:, None]).sum(dim=(2, 3)) * _crow_weights(features)


def weighted_max(features, cam):
    return _l2n((features * cam[:, None]).amax(dim=(2, 3)) * _crow_weights(features))


def weighted_weights_of_weighted(features, cam):
    xw = features * cam[:, None]
    return _l2n(xw.sum(dim=(2, 3)) * _crow_weights(xw))


def weighted_weights_after_l2(features, cam):
    return _l2n((features * cam[:, None]).sum(dim=(2, 3))) * _crow_weights(features)


# ----------------------------------------------------------------- alpha-QE (notebook 7)
def aqe_correct(Q, X, k, alpha):
    # naver's form: the mean of the query and its weighted neighbours (same direction as the sum)
    s, idx = (Q @ X.T).topk(k, dim=1)
    parts = torch.cat([Q[:, None], (s**alpha)[..., None] * X[idx]], dim=1)
    return _l2n(parts.mean(dim=1))


def aqe_no_query(Q, X, k, alpha):
    s, idx = (Q @ X.T).topk(k, dim=1)
    return _l2n(((s**alpha)[..., None] * X[idx]).sum(dim=1))


def aqe_alpha_ignored(Q, X, k, alpha):
    s, idx = (Q @ X.T).topk(k, dim=1)
    return _l2n(Q + (s[..., None] * X[idx]).sum(dim=1))


def aqe_plain_average(Q, X, k, alpha):
    _, idx = (Q @ X.T).topk(k, dim=1)
    return _l2n(Q + X[idx].sum(dim=1))


def aqe_skips_first(Q, X, k, alpha):
    s, idx = (Q @ X.T).topk(k + 1, dim=1)
    return _l2n(Q + ((s[:, 1:] ** alpha)[..., None] * X[idx[:, 1:]]).sum(dim=1))


def aqe_least_similar(Q, X, k, alpha):
    s, idx = (Q @ X.T).topk(k, dim=1, largest=False)
    return _l2n(Q + ((s**alpha)[..., None] * X[idx]).sum(dim=1))


def aqe_no_l2(Q, X, k, alpha):
    s, idx = (Q @ X.T).topk(k, dim=1)
    return Q + ((s**alpha)[..., None] * X[idx]).sum(dim=1)


def aqe_mean_of_neighbours(Q, X, k, alpha):
    s, idx = (Q @ X.T).topk(k, dim=1)
    return _l2n(Q + ((s**alpha)[..., None] * X[idx]).mean(dim=1))


# ----------------------------------------------------------------- losses and mining (notebook 8)
def contrastive_correct(a, b, y, margin):
    D = ((a - b) ** 2).sum(dim=1)
    y = y.float()
    return (0.5 * y * D + 0.5 * (1 - y) * torch.relu(margin - D)).mean()


def contrastive_cirtorch(a, b, y, margin):
    d = torch.norm(a - b, dim=1)
    y = y.float()
    return (0.5 * y * d**2 + 0.5 * (1 - y) * torch.relu(margin - d) ** 2).mean()


def contrastive_distance(a, b, y, margin):
    D = torch.norm(a - b, dim=1)
    y = y.float()
    return (0.5 * y * D + 0.5 * (1 - y) * torch.relu(margin - D)).mean()


def contrastive_labels_swapped(a, b, y, margin):
    D = ((a - b) ** 2).sum(dim=1)
    y = y.float()
    return (0.5 * (1 - y) * D + 0.5 * y * torch.relu(margin - D)).mean()


def contrastive_sum(a, b, y, margin):
    D = ((a - b) ** 2).sum(dim=1)
    y = y.float()
    return (0.5 * y * D + 0.5 * (1 - y) * torch.relu(margin - D)).sum()


def contrastive_no_half(a, b, y, margin):
    D = ((a - b) ** 2).sum(dim=1)
    y = y.float()
    return (y * D + (1 - y) * torch.relu(margin - D)).mean()


def contrastive_no_hinge(a, b, y, margin):
    D = ((a - b) ** 2).sum(dim=1)
    y = y.float()
    return (0.5 * y * D + 0.5 * (1 - y) * (margin - D)).mean()


def _sq(u, v):
    return ((u - v) ** 2).sum(dim=1)


def triplet_correct(anchor, positive, negative, margin):
    return torch.relu(margin + _sq(anchor, positive) - _sq(anchor, negative)).mean()


def triplet_torch_builtin(anchor, positive, negative, margin):
    return torch.nn.functional.triplet_margin_loss(anchor, positive, negative, margin=margin)


def triplet_no_hinge(anchor, positive, negative, margin):
    return (margin + _sq(anchor, positive) - _sq(anchor, negative)).mean()


def triplet_swapped(anchor, positive, negative, margin):
    return torch.relu(margin + _sq(anchor, negative) - _sq(anchor, positive)).mean()


def triplet_sum(anchor, positive, negative, margin):
    return torch.relu(margin + _sq(anchor, positive) - _sq(anchor, negative)).sum()


def triplet_minus_margin(anchor, positive, negative, margin):
    return torch.relu(_sq(anchor, positive) - _sq(anchor, negative) - margin).mean()


def triplet_violating_only(anchor, positive, negative, margin):
    losses = torch.relu(margin + _sq(anchor, positive) - _sq(anchor, negative))
    return losses[losses > 0].mean()


def _similarities(anchors, pool, positives_of, value=-math.inf, own_index_only=False):
    S = anchors @ pool.T
    for i, pos in enumerate(positives_of):
        S[i, [i] if own_index_only else list(pos)] = value
    return S


def mining_correct(anchors, pool, positives_of, n):
    return _similarities(anchors, pool, positives_of).argsort(dim=1, descending=True)[:, :n]


def mining_keeps_positives(anchors, pool, positives_of, n):
    return (anchors @ pool.T).topk(n, dim=1).indices


def mining_own_index(anchors, pool, positives_of, n):
    return _similarities(anchors, pool, positives_of, own_index_only=True).topk(n, dim=1).indices


def mining_farthest(anchors, pool, positives_of, n):
    return _similarities(anchors, pool, positives_of, value=math.inf).argsort(dim=1)[:, :n]


def mining_index_order(anchors, pool, positives_of, n):
    return _similarities(anchors, pool, positives_of).topk(n, dim=1).indices.sort(dim=1).values


def mining_skips_first(anchors, pool, positives_of, n):
    return _similarities(anchors, pool, positives_of).argsort(dim=1, descending=True)[:, 1 : n + 1]


def mining_positives_at_zero(anchors, pool, positives_of, n):
    S = _similarities(anchors, pool, positives_of, value=0.0)
    return torch.sort(S, dim=1, descending=True, stable=True).indices[:, :n]


# ----------------------------------------------------------------- kNN preservation (notebook 9)
def _knn(Z, k, **kw):
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k, **kw).fit(Z).kneighbors(return_distance=False)  # each point left out


def knn_correct(X, Y, k):
    A, B = _knn(X, k), _knn(Y, k)
    return np.mean([len(set(a) & set(b)) / k for a, b in zip(A, B)])


def knn_self_included(X, Y, k):
    from sklearn.neighbors import NearestNeighbors

    A = NearestNeighbors(n_neighbors=k).fit(X).kneighbors(X, return_distance=False)
    B = NearestNeighbors(n_neighbors=k).fit(Y).kneighbors(Y, return_distance=False)
    return np.mean([len(set(a) & set(b)) / k for a, b in zip(A, B)])


def knn_cosine(X, Y, k):
    A, B = _knn(X, k, metric="cosine"), _knn(Y, k, metric="cosine")
    return np.mean([len(set(a) & set(b)) / k for a, b in zip(A, B)])


def knn_farthest(X, Y, k):
    def far(Z):
        D = np.linalg.norm(Z[:, None] - Z[None], axis=-1)
        return np.argsort(-D, axis=1)[:, :k]

    A, B = far(X), far(Y)
    return np.mean([len(set(a) & set(b)) / k for a, b in zip(A, B)])


def knn_count(X, Y, k):
    A, B = _knn(X, k), _knn(Y, k)
    return np.mean([len(set(a) & set(b)) for a, b in zip(A, B)])


def knn_jaccard(X, Y, k):
    A, B = _knn(X, k), _knn(Y, k)
    return np.mean([len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in zip(A, B)])


def knn_same_rank(X, Y, k):
    A, B = _knn(X, k), _knn(Y, k)
    return float((A == B).mean())



def knn_one_fewer(X, Y, k):
    near = lambda Z: np.argsort(((Z[:, None] - Z[None]) ** 2).sum(-1), axis=1)[:, 1:k]  # the point itself, then k - 1
    A, B = near(np.asarray(X)), near(np.asarray(Y))
    return np.mean([len(set(a) & set(b)) / k for a, b in zip(A, B)])


CORRECT = {
    "window_pool": wp_correct, "mac": mac_correct, "spoc": spoc_correct, "gem": gem_correct,
    "average_precision": ap_correct, "mean_ap": map_correct,
    "vlad": vlad_correct, "rmac_regions": regions_correct, "rmac": rmac_correct,
    "crow_spatial_weights": spatial_correct, "crow_channel_weights": channel_correct,
    "class_activation_map": cam_correct, "class_weighted_vector": weighted_correct, "alpha_qe": aqe_correct,
    "contrastive_loss": contrastive_correct, "triplet_loss": triplet_correct, "hard_negatives": mining_correct,
    "knn_preservation": knn_correct, **NEW_CORRECT,
}

WRONG = [
    ("window_pool", wp_always_max, "computes max pooling whatever `kind` says"),
    ("window_pool", wp_always_avg, "computes average pooling whatever `kind` says"),
    ("window_pool", wp_stride_one, "moves the window by 1 instead of 2"),
    ("window_pool", wp_avg_is_sum, "returns the window sums for 'avg'"),
    ("mac", mac_mean, "equals average pooling"),
    ("mac", mac_sum, "equals sum pooling"),
    ("mac", mac_rows_then_mean, "max over rows only"),
    ("mac", mac_abs, "absolute values"),
    ("spoc", spoc_no_prior, "plain sum pooling (no centre prior)"),
    ("spoc", spoc_mean, "plain average pooling"),
    ("spoc", spoc_centre_half, "centre at (H/2, W/2)"),
    ("spoc", spoc_sigma_third, "sigma = min(H, W)/3"),
    ("spoc", spoc_no_two, "without the factor 2"),
    ("gem", gem_max, "equals max pooling"),
    ("gem", gem_no_root, "forgets the final 1/p root"),
    ("gem", gem_sum, "sums x^p instead of averaging"),
    ("gem", gem_no_clamp, "does not clamp"),
    ("gem", gem_ignores_p, "equals average pooling (is p used?)"),
    ("average_precision", ap_sklearn, "finite-sum AP"),
    ("average_precision", ap_found, "number of positives found"),
    ("average_precision", ap_unsorted, "sort them first"),
    ("average_precision", ap_one_based, "1-based"),
    ("mean_ap", map_counts_junk, "counts junk images"),
    ("mean_ap", map_zero_for_empty, "AP 0 instead of leaving them out"),
    ("mean_ap", map_junk_positive, "treats junk images as positives"),
    ("mean_ap", map_sklearn, "finite-sum AP"),
    ("vlad", vlad_every_centre, "adds every descriptor's residual to every centre"),
    ("vlad", vlad_flipped, "uses c_k - x_t"),
    ("vlad", vlad_dimension_major, "flattens dimension-major"),
    ("vlad", vlad_no_l2, "is not L2-normalised at the end"),
    ("vlad", vlad_mean, "averages the residuals of each centre"),
    ("vlad", vlad_intra_first, "intra-normalises before the power"),
    ("vlad", vlad_unit_residuals, "normalises each residual"),
    ("vlad", vlad_unsigned_power, "drops the sign in the power"),
    ("vlad", vlad_nan_for_empty, "empty centre's zero sum"),
    ("rmac_regions", regions_integer_step, "do not reach the right or bottom border"),
    ("rmac_regions", regions_one_based, "1-based corners"),
    ("rmac_regions", regions_square_only, "l x l grid even on a non-square map"),
    ("rmac_regions", regions_one_too_few, "one region too few along the long side"),
    ("rmac_regions", regions_ceil, "round the region side up"),
    ("rmac_regions", regions_xywh, "are (x, y, w, h)"),
    ("rmac", rmac_no_region_l2, "does not L2-normalise each region's MAC"),
    ("rmac", rmac_no_final_l2, "is not L2-normalised at the end"),
    ("rmac", rmac_global_term, "adds a global MAC term"),
    ("rmac", rmac_average, "averages each region"),
    ("rmac", rmac_pyretri, "one cell too small"),
    ("crow_spatial_weights", spatial_no_root, "forgets the final root 1/b"),
    ("crow_spatial_weights", spatial_l1, "divides by the sum of S"),
    ("crow_spatial_weights", spatial_max, "divides by the maximum of S"),
    ("crow_spatial_weights", spatial_no_a_root, "without the root 1/a"),
    ("crow_spatial_weights", spatial_batch_norm, "normalises over the whole batch"),
    ("crow_spatial_weights", spatial_nan, "divides 0 by 0 on an all-zero map"),
    ("crow_channel_weights", channel_flipped, "has the sign flipped"),
    ("crow_channel_weights", channel_pyretri_eps, "adds an epsilon to Q"),
    ("crow_channel_weights", channel_infinite, "infinite weight"),
    ("crow_channel_weights", channel_zeros, "fraction of zero positions"),
    ("crow_channel_weights", channel_batch, "counts over the whole batch"),
    ("crow_channel_weights", channel_log10, "uses log10"),
    ("crow_channel_weights", channel_mean_activation, "uses the mean activation"),
    ("class_activation_map", cam_relu_first, "clips negative values, then divides 0 by 0"),
    ("class_activation_map", cam_unnormalised, "is not divided by its maximum"),
    ("class_activation_map", cam_no_relu, "keeps negative values"),
    ("class_activation_map", cam_column, "uses the column W[:, c]"),
    ("class_activation_map", cam_all_classes, "sums the weights of all classes"),
    ("class_activation_map", cam_batch_max, "maximum over the whole batch"),
    ("class_weighted_vector", weighted_no_channel_weights, "has no channel weights"),
    ("class_weighted_vector", weighted_no_l2, "is not L2-normalised"),
    ("class_weighted_vector", weighted_max, "takes the maximum of x * cam"),
    ("class_weighted_vector", weighted_weights_of_weighted, "channel weights on the CAM-weighted maps"),
    ("class_weighted_vector", weighted_weights_after_l2, "channel weights after the L2 normalisation"),
    ("alpha_qe", aqe_no_query, "leaves out the query itself"),
    ("alpha_qe", aqe_alpha_ignored, "weights the neighbours by s_j instead of s_j^alpha"),
    ("alpha_qe", aqe_plain_average, "ignores the weights"),
    ("alpha_qe", aqe_skips_first, "skips the nearest vector"),
    ("alpha_qe", aqe_least_similar, "takes the k least similar vectors"),
    ("alpha_qe", aqe_no_l2, "is not L2-normalised"),
    ("contrastive_loss", contrastive_cirtorch, "is cirtorch's form"),
    ("contrastive_loss", contrastive_distance, "uses the distance ||a - b||"),
    ("contrastive_loss", contrastive_labels_swapped, "swaps the labels"),
    ("contrastive_loss", contrastive_sum, "sums over the pairs"),
    ("contrastive_loss", contrastive_no_half, "forgets the factors 1/2"),
    ("contrastive_loss", contrastive_no_hinge, "forgets the max(0, .)"),
    ("triplet_loss", triplet_torch_builtin, "instead of squared distances"),
    ("triplet_loss", triplet_no_hinge, "forgets the max(0, .)"),
    ("triplet_loss", triplet_swapped, "swaps the positive and the negative"),
    ("triplet_loss", triplet_sum, "sums over the triplets"),
    ("triplet_loss", triplet_minus_margin, "subtracts the margin"),
    ("hard_negatives", mining_keeps_positives, "returns the anchor's positives"),
    ("hard_negatives", mining_own_index, "leaves out only the anchor's own index"),
    ("hard_negatives", mining_farthest, "returns the farthest negatives"),
    ("hard_negatives", mining_index_order, "in index order"),
    ("hard_negatives", mining_skips_first, "skips the nearest negative"),
    ("knn_preservation", knn_self_included, "counts each point as its own neighbour"),
    ("knn_preservation", knn_cosine, "ranks by cosine similarity"),
    ("knn_preservation", knn_farthest, "takes the k farthest points"),
    ("knn_preservation", knn_count, "number of kept neighbours"),
    ("knn_preservation", knn_jaccard, "Jaccard"),
    ("knn_preservation", knn_same_rank, "only at the same rank"),
    *NEW_WRONG,
]


# ----------------------------------------------------------------- the layout of the checks
def test_tasks_are_the_notebooks_tasks_in_notebook_order():
    assert list(checks.TASKS) == [
        "window_pool", "mac", "spoc", "gem", "average_precision", "mean_ap", "bow_tfidf", "vlad", "rmac_regions", "rmac",
        "os_rmac", "crow_spatial_weights", "crow_channel_weights", "second_order", "class_activation_map",
        "class_weighted_vector", "cam_descriptor", "alpha_qe", "pca_whiten", "contrastive_loss", "triplet_loss",
        "hard_negatives", "gradient_descent", "knn_preservation", "benchmark_row"]
    assert [t for m in NOTEBOOK_MODULES for t in m.TASKS] == list(checks.TASKS)
    assert all(checks.TASKS[name].name == name for name in checks.TASKS)


@pytest.mark.parametrize("task", list(checks.TASKS))
def test_each_check_is_a_plain_function_of_its_notebook_module(task):
    (module,) = [m for m in NOTEBOOK_MODULES if task in m.TASKS]
    check = getattr(checks, f"check_{task}")
    assert check is getattr(module, f"check_{task}") and check.__module__ == module.__name__
    assert check.__name__ == f"check_{task}" and check.__doc__
    assert f'run_check("{task}", ' in inspect.getsource(check)
    assert f"check_{task}" in checks.__all__


def test_importing_the_checks_prints_nothing_and_does_not_load_faiss():
    import subprocess
    import sys

    code = "import sys\nfrom retrievalkit.teaching import checks\nprint('faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "False\n" and out.stderr == ""


# every parametrised mistake model: with no flags it must be the reference (so each mistake is the
# reference plus exactly one named change)
VARIANT_TASK = {
    "_spoc_variant": "spoc", "_gem_variant": "gem", "_vlad_variant": "vlad", "_regions_variant": "rmac_regions",
    "_rmac_variant": "rmac", "_spatial_variant": "crow_spatial_weights", "_channel_variant": "crow_channel_weights",
    "_cam_variant": "class_activation_map", "_weighted_variant": "class_weighted_vector", "_aqe_variant": "alpha_qe",
    "_contrastive_variant": "contrastive_loss", "_triplet_variant": "triplet_loss", "_mining_variant": "hard_negatives",
    "_knn_variant": "knn_preservation", "_tfidf_variant": "bow_tfidf", "_os_rmac_variant": "os_rmac",
    "_second_order_variant": "second_order", "_aggregate_variant": "cam_descriptor", "_whiten_variant": "pca_whiten",
    "_descent_variant": "gradient_descent", "_row_variant": "benchmark_row",
}


def _functions(module):
    return {name: f for name, f in vars(module).items() if inspect.isfunction(f) and f.__module__ == module.__name__}


def test_every_parametrised_mistake_model_is_a_listed_variant():
    variants = {name for m in NOTEBOOK_MODULES for name in _functions(m) if name.endswith("_variant")}
    assert variants == set(VARIANT_TASK)
    for m in NOTEBOOK_MODULES:
        for name, f in _functions(m).items():
            flags = [p for p in inspect.signature(f).parameters.values() if p.kind is p.KEYWORD_ONLY]
            if flags:  # keyword flags make mistakes: only the variants may take them, and only them
                assert name in VARIANT_TASK and VARIANT_TASK[name] in m.TASKS, f"{m.__name__}.{name}"
                assert all(p.kind is p.KEYWORD_ONLY for p in inspect.signature(f).parameters.values()), name


@pytest.mark.parametrize("variant", sorted(VARIANT_TASK))
def test_a_variant_without_flags_is_the_reference(variant):
    task = VARIANT_TASK[variant]
    (module,) = [m for m in NOTEBOOK_MODULES if task in m.TASKS]
    plain = getattr(module, variant)()
    for seed in range(4):
        for r in checks.judge(task, seed, checks.probe(task, plain, seed)):
            assert r.passed, (seed, r.label, r.message)


@pytest.mark.parametrize("task", list(checks.TASKS))
def test_every_mistake_differs_from_the_reference_on_some_case(task):
    with np.errstate(all="ignore"):
        for m in checks.TASKS[task].mistakes:  # a mistake that raises on a case differs there too
            results = [r for seed in range(3) for r in checks.judge(task, seed, checks.probe(task, m.compute, seed))]
            assert not all(r.passed for r in results), m.description


# ----------------------------------------------------------------- the checks at work
def test_every_task_has_a_correct_fixture_and_four_wrong_ones():
    assert set(CORRECT) == set(checks.TASKS)
    for task in checks.TASKS:
        assert sum(1 for t, _, _ in WRONG if t == task) >= 4, task


@pytest.mark.parametrize("task", sorted(CORRECT))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_correct_answer_passes_with_a_short_confirmation(task, seed, capsys):
    checks.run_check(task, CORRECT[task], seed=seed)
    assert capsys.readouterr().out.strip() == f"✓ {task}: all {len(checks.TASKS[task].cases(np.random.default_rng(seed)))} checks passed"


@pytest.mark.parametrize("task, fn, message", WRONG, ids=[f"{t}-{f.__name__}" for t, f, _ in WRONG])
@pytest.mark.parametrize("seed", [0, 7])
def test_each_wrong_answer_gets_its_own_message(task, fn, message, seed):
    with pytest.raises(checks.CheckFailed) as info:
        checks.run_check(task, fn, seed=seed)
    text = str(info.value)
    assert message in text, text
    # no other mistake's message is claimed for it
    others = [m.description for m in checks.TASKS[task].mistakes if message not in m.description]
    assert not any(o in text for o in others), text


def test_the_gem_p1_message_reads_as_the_course_promises():
    with pytest.raises(checks.CheckFailed, match="GeM with p=1 should equal average pooling; yours equals max pooling"):
        checks.run_check("gem", gem_max, seed=3)


def test_an_exception_in_the_student_code_is_reported_and_not_implemented_propagates():
    def crashes(x, p=3.0, eps=1e-6):
        raise IndexError("boom")

    with pytest.raises(checks.CheckFailed, match="yours raised IndexError: boom"):
        checks.run_check("gem", crashes, seed=0)

    def todo(x, p=3.0, eps=1e-6):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError) as info:  # still a NotImplementedError, told in one line
        checks.check_gem(todo)
    assert isinstance(info.value, checks.CheckFailed)
    assert info.value._render_traceback_() == [
        "NotWritten: gem is not written yet: replace `raise NotImplementedError()` in its cell with your code, "
        "run that cell, then this one"]


def test_judge_only_needs_numbers_and_rejects_forged_answers():
    outputs = checks.probe("mac", mac_correct, seed=5)
    assert all(set(o) == {"shape", "values"} for o in outputs)
    assert all(r.passed for r in checks.judge("mac", 5, outputs))
    # answers probed on another seed do not pass: the inputs are fresh
    assert not all(r.passed for r in checks.judge("mac", 6, outputs))
    assert not any(r.passed for r in checks.judge("mac", 5, [{"shape": [1], "values": ["x"]}] * len(outputs)))
    assert not any(r.passed for r in checks.judge("mac", 5, []))
    with pytest.raises(ValueError, match="task"):
        checks.judge("nope", 0, [])


def test_regions_are_compared_as_a_set():
    checks.run_check("rmac_regions", lambda H, W, L=3: regions_correct(H, W, L)[::-1], seed=4, quiet=True)
    with pytest.raises(checks.CheckFailed, match=r"has shape \(19, 4\), expected \(20, 4\)"):
        checks.run_check("rmac_regions", lambda H, W, L=3: regions_correct(H, W, L)[1:], seed=4)


def test_an_output_that_two_mistakes_share_is_put_down_to_the_one_that_explains_more_cases():
    # on the 30x40 map one region too few along the long side (d = 0) is also the square-only grid;
    # the panorama (d = 3 there, not 0) tells them apart
    assert regions_one_too_few(30, 40) == regions_square_only(30, 40)
    for fn, mine, other in [(regions_one_too_few, "one region too few", "l x l grid"),
                            (regions_square_only, "l x l grid", "one region too few")]:
        results = {r.label: r for r in checks.judge("rmac_regions", 1, checks.probe("rmac_regions", fn, 1))}
        assert mine in results["30x40 map"].message and other not in results["30x40 map"].message
        assert mine in results["panorama"].message


def test_every_case_pickles_without_the_package():
    # the grader sends the cases to a kernel that cannot import retrievalkit
    for name, task in checks.TASKS.items():
        blob = pickle.dumps([(c.args, c.kwargs) for c in task.cases(np.random.default_rng(0))])
        assert b"retrievalkit" not in blob, name


def test_an_unexplained_wrong_number_or_index_list_is_shown_beside_the_expected_one():
    def knn_over_n(X, Y, k):  # divides by n instead of k: no listed mistake
        X, Y = np.asarray(X), np.asarray(Y)
        near = lambda Z: np.argsort(((Z[:, None] - Z[None]) ** 2).sum(-1), axis=1)[:, 1 : k + 1]
        A, B = near(X), near(Y)
        return sum(len(set(a) & set(b)) for a, b in zip(A, B)) / len(X) / len(X)

    expected = knn_correct(*checks.TASKS["knn_preservation"].cases(np.random.default_rng(5))[1].args)
    with pytest.raises(checks.CheckFailed, match=rf"gives [0-9.]+, expected {expected:.4g}"):
        checks.run_check("knn_preservation", knn_over_n, seed=5)

    def reversed_negatives(anchors, pool, positives_of, n):  # farthest after masking: no listed mistake
        S = anchors @ pool.T
        for i, p in enumerate(positives_of):
            S[i, list(p)] = -torch.inf
        return torch.sort(S, dim=1, descending=True, stable=True).indices[:, :n].flip(1)

    with pytest.raises(checks.CheckFailed, match=r"the right values in each row, in the wrong order"):
        checks.run_check("hard_negatives", reversed_negatives, seed=5)

    def last_negative_wrong(anchors, pool, positives_of, n):  # the last index off by one: no listed mistake
        S = anchors @ pool.T
        for i, p in enumerate(positives_of):
            S[i, list(p)] = -torch.inf
        idx = torch.sort(S, dim=1, descending=True, stable=True).indices[:, :n].clone()
        idx[:, -1] = (idx[:, -1] + 1) % len(pool)
        return idx

    with pytest.raises(checks.CheckFailed, match=r"differs: row 0 is \[\d+(, \d+)*\], expected \[\d+(, \d+)*\]"):
        checks.run_check("hard_negatives", last_negative_wrong, seed=5)


def _mac(x):
    return x.amax(dim=(-2, -1))


@pytest.mark.parametrize("task, wrong, feedback", [
    # a wrong shape, explained by the axes of the (N, K, H, W) input it kept
    ("mac", lambda x: x.amax(dim=1), "it reduces over the channels (one value per image, row and column); "
                                     "reduce over the rows and columns instead"),
    ("mac", lambda x: x.amax(dim=(0, -2, -1)), "it reduces over the images, rows and columns (one value per channel)"),
    ("mac", lambda x: x.amax(dim=(-2, -1), keepdim=True), "the right values, but with extra axes of size 1 (keepdim?)"),
    ("mac", lambda x: _mac(x).T, "the right values, transposed (rows and columns swapped)"),
    # the expected shape, wrong values: what they equal
    ("mac", lambda x: 2 * _mac(x), "is off by a constant factor: 2 times the expected values"),
    ("mac", lambda x: _mac(x) + 0.5, "is off by a constant +0.5 everywhere"),
    ("mac", lambda x: -_mac(x), "has the opposite sign (every value negated)"),
    ("mac", lambda x: _mac(x).flip(-1), "has the right values in the wrong order"),
    ("mac", lambda x: _mac(x) * torch.arange(1, len(x) + 1)[:, None], "is off by a different factor in each row"),
    ("mac", lambda x: torch.cat([_mac(x)[:1] + 1e-3 * torch.arange(_mac(x).shape[1]), _mac(x)[1:]]),
     "differs only in row 0 of"),
])
def test_an_unexplained_wrong_answer_is_diagnosed_by_what_it_equals(task, wrong, feedback):
    with pytest.raises(checks.CheckFailed) as info:
        checks.run_check(task, wrong, seed=3)
    assert feedback in str(info.value), str(info.value)


def test_nan_is_traced_to_an_all_zero_input():
    from retrievalkit.teaching.checks import core

    x = torch.ones(3, 2, 4, 4)
    x[1] = 0
    expected = np.ones((3, 2))
    value = expected.copy()
    value[1] = np.nan  # 0 / 0 on the all-zero image 1
    case = core.Case("zero map", "", (x,))
    assert core._difference(value, expected, case) == (
        "gives NaN or infinity in row 1, where the input is all zero (a division by zero there?)")
    value = expected.copy()
    value[2, 0] = np.inf  # image 2 is not all zero
    assert core._difference(value, expected, case) == "gives NaN or infinity in row 2 (expected finite numbers)"


def aqe_whole_database(Q, X, k, alpha):  # a student's alpha-QE that forgets the top-k
    S = Q @ X.T
    return torch.nn.functional.normalize(Q + (S.clamp(min=0) ** alpha) @ X, dim=1)


def crow_channel_idf(x):  # a student's CroW channel weights as log(1/Q), written from the idf formula
    Q = (x > 0).float().mean(dim=(-2, -1))
    return torch.where(Q > 0, torch.log(1 / Q), torch.zeros_like(Q))


@pytest.mark.parametrize("task, wrong, named", [
    ("alpha_qe", aqe_whole_database, "expands with the whole database"),
    ("crow_channel_weights", crow_channel_idf, "a plain inverse document frequency"),
    ("hard_negatives", mining_positives_at_zero, "similarity 0"),
    ("knn_preservation", knn_one_fewer, "k - 1 neighbours"),
    ("alpha_qe", aqe_mean_of_neighbours, "divides the neighbours' sum by k"),
    ("triplet_loss", triplet_violating_only, "violate the margin only"),
])
def test_the_mistakes_students_made_in_review_are_named(task, wrong, named):
    with pytest.raises(checks.CheckFailed, match=named):
        checks.run_check(task, wrong, seed=11)


def test_a_failed_check_in_a_notebook_shows_the_feedback_without_the_checks_own_frames():
    import nbformat
    from nbclient import NotebookClient

    from retrievalkit.teaching.channels import SteppedKernelManager

    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "from retrievalkit.teaching import checks\n"
        "checks.check_mac(lambda x: x.mean(dim=(-2, -1)))"))
    NotebookClient(nb, timeout=60, kernel_name="python3", allow_errors=True,
                   kernel_manager_class=SteppedKernelManager).execute()
    (error,) = [o for o in nb.cells[0].outputs if o.output_type == "error"]
    shown = "\n".join(error.traceback)
    assert error.ename == "CheckFailed" and "equals average pooling" in shown
    assert "retrievalkit" not in shown and "run_check" not in shown and "Traceback" not in shown


# ----------------------------------------------------------------- reference-code quirks: the paper's form is right too
@pytest.mark.parametrize("seed", [0, 7])
def test_a_cam_in_the_papers_order_relu_then_divide_passes_too(seed, capsys):
    checks.run_check("class_activation_map", cam_relu_first_guarded, seed=seed)
    assert "all 4 checks passed" in capsys.readouterr().out
    # and only where the two orders differ is there anything to accept: a negative-maximum CAM
    x, w = torch.rand(1, 3, 2, 2) + 0.1, -torch.rand(2, 3)
    assert torch.equal(cam_relu_first_guarded(x, w, 1), torch.zeros(1, 2, 2))
    assert bool((cam_correct(x, w, 1) > 0).all())  # the authors' code flips the sign instead
