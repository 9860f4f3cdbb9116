"""Class-weighted features (Jimenez et al. 2017) against independent loops and hand-known values."""
import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from retrievalkit.cam import (aggregate_classes, box_rerank, box_vectors, cam_boxes, class_activation_maps, class_vectors,
                              class_weighted, top_classes)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def numpy_cam(A, W, c):
    """The peer's loop: weighted sum of the maps, divided by its max, then clipped at 0."""
    cam = np.zeros(A.shape[1:])
    for k in range(A.shape[0]):
        cam += W[c, k] * A[k]
    cam /= np.max(cam)
    cam[cam < 0] = 0
    return cam


def numpy_channel_weights(X):
    Q = np.array([np.count_nonzero(x) / x.size for x in X])
    return np.array([np.log(Q.sum() / q) if q > 0 else 0.0 for q in Q])


# --- class_activation_maps -------------------------------------------------------------


def test_cam_equals_peer_loop():
    A = torch.randn(2, 5, 4, 6, generator=gen(0), dtype=torch.float64)
    W = torch.randn(7, 5, generator=gen(1), dtype=torch.float64)
    classes = torch.tensor([[3, 0, 6], [1, 3, 2]])
    cams = class_activation_maps(A, W, classes)
    assert cams.shape == (2, 3, 4, 6) and cams.dtype == torch.float64
    for i in range(2):
        for j in range(3):
            expected = numpy_cam(A[i].numpy(), W.numpy(), int(classes[i, j]))
            np.testing.assert_allclose(cams[i, j].numpy(), expected, rtol=1e-12, atol=1e-15)


def test_cam_negative_max_flips_sign():
    # K = 1, W = [[1]]: cam = A = [[-1, -2], [-4, -0.5]], max = -0.5
    # cam / max = [[2, 4], [8, 1]] (all positive, so clipping changes nothing): the most
    # negative position (-4) becomes the largest value.
    A = torch.tensor([[[-1.0, -2.0], [-4.0, -0.5]]])
    cam = class_activation_maps(A, torch.tensor([[1.0]]), [0])
    torch.testing.assert_close(cam, torch.tensor([[[2.0, 4.0], [8.0, 1.0]]]))


def test_cam_zero_max_gives_zeros():
    A = torch.tensor([[[0.0, -1.0], [-2.0, 0.0]]])
    cam = class_activation_maps(A, torch.tensor([[1.0]]), [0])
    assert torch.equal(cam, torch.zeros(1, 2, 2))


def test_cam_same_classes_for_every_image():
    A = torch.randn(3, 4, 2, 3, generator=gen(2))
    W = torch.randn(5, 4, generator=gen(3))
    a = class_activation_maps(A, W, [4, 1])
    b = class_activation_maps(A, W, torch.tensor([[4, 1]] * 3))
    torch.testing.assert_close(a, b)
    assert class_activation_maps(A[0], W, [4, 1]).shape == (2, 2, 3)
    torch.testing.assert_close(class_activation_maps(A[0], W, [4, 1]), a[0])


def test_cam_gradient():
    A = torch.rand(1, 3, 3, 3, generator=gen(4), dtype=torch.float64).requires_grad_()
    W = torch.randn(4, 3, generator=gen(5), dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, w: class_activation_maps(a, w, [0, 2]), (A, W))
    class_activation_maps(A, W, [0, 2]).sum().backward()
    assert A.grad is not None and W.grad is not None and (W.grad.abs() > 0).any()


@pytest.mark.parametrize(
    "features, fc_weight, classes, name",
    [
        (torch.ones(2, 2), torch.ones(3, 2), [0], "features"),  # wrong rank
        (torch.ones(1, 0, 2, 2), torch.ones(3, 0), [0], "features"),  # empty
        (torch.full((1, 2, 2, 2), float("nan")), torch.ones(3, 2), [0], "features"),
        (torch.ones(1, 2, 2, 2), torch.ones(3, 4), [0], "fc_weight"),  # K mismatch
        (torch.ones(1, 2, 2, 2), torch.ones(3, 2, 1), [0], "fc_weight"),  # wrong rank
        (torch.ones(1, 2, 2, 2), torch.ones(3, 2), [3], "classes"),  # out of range
        (torch.ones(1, 2, 2, 2), torch.ones(3, 2), [-1], "classes"),
        (torch.ones(1, 2, 2, 2), torch.ones(3, 2), [0.5], "classes"),  # not integer
        (torch.ones(1, 2, 2, 2), torch.ones(3, 2), [], "classes"),  # empty
        (torch.ones(2, 2, 2, 2), torch.ones(3, 2), torch.tensor([[0], [1], [2]]), "classes"),  # 3 rows, 2 images
    ],
)
def test_cam_rejects_bad_input(features, fc_weight, classes, name):
    with pytest.raises(ValueError, match=f"^{name} must"):
        class_activation_maps(features, fc_weight, classes)


# --- top_classes -----------------------------------------------------------------------


def test_top_classes_best_first():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0], [5.0, -2.0, 0.0, 7.0]])
    assert top_classes(logits, 3).tolist() == [[1, 3, 0], [3, 0, 2]]
    assert top_classes(logits[1], 1).tolist() == [3]


@pytest.mark.parametrize(
    "logits, n, name",
    [
        (torch.ones(2, 4), 0, "n"),
        (torch.ones(2, 4), 5, "n"),
        (torch.ones(2, 4), 1.5, "n"),
        (torch.ones(1, 2, 4), 1, "logits"),
        (torch.tensor([[0.0, float("nan")]]), 1, "logits"),
        (torch.ones(2, 0), 1, "logits"),
    ],
)
def test_top_classes_rejects_bad_input(logits, n, name):
    with pytest.raises(ValueError, match=f"^{name} must"):
        top_classes(logits, n)


# --- class_weighted --------------------------------------------------------------------


def test_class_weighted_equals_formula_and_is_unit():
    X = torch.relu(torch.randn(2, 6, 4, 5, generator=gen(6), dtype=torch.float64))
    cams = torch.rand(2, 3, 4, 5, generator=gen(7), dtype=torch.float64)
    for cw in (True, False):
        d = class_weighted(X, cams, channel_weights=cw)
        assert d.shape == (2, 3, 6)
        torch.testing.assert_close(d.norm(dim=-1), torch.ones(2, 3, dtype=torch.float64))
        for i in range(2):
            w = numpy_channel_weights(X[i].numpy()) if cw else np.ones(6)
            for c in range(3):
                v = np.array([(X[i, k].numpy() * cams[i, c].numpy()).sum() for k in range(6)]) * w
                np.testing.assert_allclose(d[i, c].numpy(), v / np.linalg.norm(v), rtol=1e-12)


def test_class_weighted_single_map_and_zero_cam():
    X = torch.relu(torch.randn(4, 3, 3, generator=gen(8)))
    cams = torch.stack([torch.rand(3, 3, generator=gen(9)), torch.zeros(3, 3)])
    d = class_weighted(X, cams)
    assert d.shape == (2, 4)
    assert torch.equal(d[1], torch.zeros(4))  # a zero vector stays zero (no NaN)


def test_class_weighted_gradient():
    X = (torch.rand(1, 3, 2, 2, generator=gen(10), dtype=torch.float64) + 0.1).requires_grad_()
    cams = torch.rand(1, 2, 2, 2, generator=gen(11), dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(class_weighted, (X, cams))


@pytest.mark.parametrize(
    "features, cams, kwargs, name",
    [
        (-torch.ones(1, 2, 2, 2), torch.ones(1, 1, 2, 2), {}, "features"),  # CroW needs post-ReLU maps
        (torch.ones(2, 2), torch.ones(1, 1, 2, 2), {}, "features"),
        (torch.ones(1, 2, 2, 2), torch.ones(1, 1, 3, 2), {}, "cams"),  # H mismatch
        (torch.ones(1, 2, 2, 2), torch.ones(2, 1, 2, 2), {}, "cams"),  # N mismatch
        (torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2), {}, "cams"),  # rank mismatch
        (torch.ones(1, 2, 2, 2), torch.full((1, 1, 2, 2), float("nan")), {}, "cams"),
        (torch.ones(1, 2, 2, 2), torch.ones(1, 1, 2, 2), {"channel_weights": 1}, "channel_weights"),
    ],
)
def test_class_weighted_rejects_bad_input(features, cams, kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} must"):
        class_weighted(features, cams, **kwargs)


def test_class_weighted_allows_negative_maps_without_channel_weights():
    d = class_weighted(-torch.ones(1, 2, 2, 2), torch.ones(1, 1, 2, 2), channel_weights=False)
    torch.testing.assert_close(d, torch.full((1, 1, 2), -(0.5**0.5)))


# --- aggregate_classes -----------------------------------------------------------------


def test_aggregate_without_pca():
    V = np.random.default_rng(0).normal(size=(3, 4, 5))
    out = aggregate_classes(V, n=2)
    assert isinstance(out, np.ndarray) and out.shape == (3, 5)
    for i in range(3):
        s = V[i, 0] + V[i, 1]
        np.testing.assert_allclose(out[i], s / np.linalg.norm(s), rtol=1e-12)
    t = aggregate_classes(torch.from_numpy(V).float())
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    s = V.sum(axis=1)
    np.testing.assert_allclose(t.numpy(), s / np.linalg.norm(s, axis=1, keepdims=True), rtol=1e-5)


def test_aggregate_with_pca_whitening():
    rng = np.random.default_rng(1)
    pca = PCA(n_components=3, whiten=True).fit(rng.normal(size=(40, 6)) * np.arange(1, 7))
    V = rng.normal(size=(2, 4, 6))
    for n in (1, 3):
        out = aggregate_classes(torch.from_numpy(V), n=n, pca=pca)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == (2, 3)
        for i in range(2):
            # whitening by hand: (v - mean) projected on the components, divided by sqrt(eigenvalue)
            P = (V[i, :n] - pca.mean_) @ pca.components_.T / np.sqrt(pca.explained_variance_)
            s = (P / np.linalg.norm(P, axis=1, keepdims=True)).sum(axis=0)
            np.testing.assert_allclose(out[i].numpy(), s / np.linalg.norm(s), rtol=1e-10)
    single = aggregate_classes(V[0].astype(np.float32), pca=pca)
    assert single.shape == (3,) and single.dtype == np.float32


def test_aggregate_gradient_without_pca():
    V = torch.randn(2, 3, 4, generator=gen(12), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: aggregate_classes(v, n=2), (V,))


@pytest.mark.parametrize(
    "vectors, kwargs, name",
    [
        (np.ones((2, 3, 4)), {"n": 0}, "n"),
        (np.ones((2, 3, 4)), {"n": 4}, "n"),
        (np.ones(4), {}, "vectors"),
        (np.ones((2, 0, 4)), {}, "vectors"),
        (np.full((2, 3, 4), np.nan), {}, "vectors"),
        (torch.full((2, 3, 4), float("nan")), {}, "vectors"),
        ([[1.0, 2.0]], {}, "vectors"),
        (np.ones((2, 3, 4)), {"pca": "not a pca"}, "pca"),
    ],
)
def test_aggregate_rejects_bad_input(vectors, kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} must"):
        aggregate_classes(vectors, **kwargs)


# --- cam_boxes -------------------------------------------------------------------------


def two_blobs():
    cam = np.zeros((8, 10))
    cam[1:3, 1:3] = 1.0  # small blob: rows 1-2, cols 1-2 (4 px), holds the maximum
    cam[4:7, 5:9] = 0.8  # large blob: rows 4-6, cols 5-8 (12 px)
    return cam


def test_cam_boxes_largest_component():
    # t = 0.5: both blobs survive, the larger is rows 4..6, cols 5..8 -> [x1, y1, x2, y2] = [5, 4, 9, 7]
    # t = 0.9: only the small blob (value 1.0 >= 0.9) -> [1, 1, 3, 3]
    assert cam_boxes(two_blobs(), thresholds=(0.5, 0.9)) == [[5, 4, 9, 7], [1, 1, 3, 3]]
    assert cam_boxes(torch.from_numpy(two_blobs()).float(), thresholds=0.5) == [[5, 4, 9, 7]]
    # t = 0.8 keeps values equal to 0.8 * max (>=)
    assert cam_boxes(two_blobs(), thresholds=[0.8]) == [[5, 4, 9, 7]]


def test_cam_boxes_eight_connectivity():
    # a diagonal chain of 3 px is one component with 8-connectivity (3 separate ones with 4)
    cam = np.zeros((6, 6))
    cam[0, 0] = cam[1, 1] = cam[2, 2] = 1.0
    cam[4, 3:5] = 1.0  # a 2-px horizontal bar
    assert cam_boxes(cam, thresholds=[0.5]) == [[0, 0, 3, 3]]


def test_cam_boxes_without_positive_values_is_whole_map():
    assert cam_boxes(np.zeros((3, 5))) == [[0, 0, 5, 3]] * 4
    cam = -np.ones((3, 5))
    cam[1, 2] = 0.0  # max exactly 0: still the whole map, not the one zero pixel
    assert cam_boxes(cam, thresholds=[0.5]) == [[0, 0, 5, 3]]
    assert cam_boxes(-np.ones((3, 5)), thresholds=[0.3]) == [[0, 0, 5, 3]]


@pytest.mark.parametrize("thresholds", [0, 1.5, (0.1, -0.2), (), (float("nan"),), "abc", [[0.1, 0.2]]])
def test_cam_boxes_rejects_bad_thresholds(thresholds):
    with pytest.raises(ValueError, match="^thresholds must"):
        cam_boxes(two_blobs(), thresholds=thresholds)


@pytest.mark.parametrize("cam", [np.ones((2, 2, 2)), np.ones((0, 3)), np.array([[np.nan, 1.0]]), [[1.0]]])
def test_cam_boxes_rejects_bad_cam(cam):
    with pytest.raises(ValueError, match="^cam must"):
        cam_boxes(cam)


class FakeNet:
    """The two things class_vectors reads: GAP + linear class scores, and the classifier's weights."""

    def __init__(self, W):
        self.fc_weight = torch.as_tensor(W)

    def logits(self, x):
        return x.mean(dim=(2, 3)) @ self.fc_weight.T


def numpy_class_vector(A, W, c):
    """Jimenez et al. eq. 3 by hand: d[k] = w_k * sum_ij A_kij cam_ij, L2-normalised."""
    d = numpy_channel_weights(A) * (A * numpy_cam(A, W, c)).sum(axis=(1, 2))
    return d / np.linalg.norm(d)


def test_class_vectors_top_classes_and_given_classes():
    g = np.random.default_rng(0)
    W = g.standard_normal((6, 4))
    maps = [g.random((4, 3, 5)) * (g.random((4, 3, 5)) > 0.3), g.random((4, 6, 2)) * (g.random((4, 6, 2)) > 0.3)]
    net = FakeNet(W)
    got = class_vectors(net, [torch.as_tensor(m) for m in maps], n=2)
    for i, A in enumerate(maps):
        top = np.argsort(-(A.mean(axis=(1, 2)) @ W.T))[:2]
        for j, c in enumerate(top):
            np.testing.assert_allclose(got[i, j].numpy(), numpy_class_vector(A, W, c), atol=1e-10)
    given = class_vectors(net, [torch.as_tensor(m) for m in maps], classes=[5, 0])
    for i, A in enumerate(maps):
        for j, c in enumerate([5, 0]):
            np.testing.assert_allclose(given[i, j].numpy(), numpy_class_vector(A, W, c), atol=1e-10)


@pytest.mark.parametrize("maps, kwargs, name", [
    ([torch.rand(4, 3, 3)], {}, "n and classes"),
    ([torch.rand(4, 3, 3)], {"n": 1, "classes": [0]}, "n and classes"),
    ([], {"n": 1}, "maps"),
    (torch.rand(4, 3), {"n": 1}, "maps"),
    ([torch.rand(1, 4, 3, 3)], {"n": 1}, r"maps\[0\]"),
])
def test_class_vectors_rejects_bad_input(maps, kwargs, name):
    with pytest.raises(ValueError, match=name):
        class_vectors(FakeNet(torch.rand(6, 4)), maps, **kwargs)


def _box_example():
    cam = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.05]])
    x = torch.full((2, 3, 4), 7.0)  # outside the boxes: never pooled
    x[:, 1, 1] = torch.tensor([2.0, 1.0])
    x[:, 1, 2] = torch.tensor([0.0, 4.0])
    return x, cam


def test_box_vectors_pool_each_box_with_its_cam_by_hand():
    x, cam = _box_example()
    # t = 0.1: cells (1,1), (1,2) -> box [1, 1, 3, 2]; t = 0.6: cell (1,1) -> box [1, 1, 2, 2]
    plain = box_vectors(x, cam[None], thresholds=(0.1, 0.6), channel_weights=False)
    # box 1: d0 = 2*1 + 0*0.5 = 2, d1 = 1*1 + 4*0.5 = 3; box 2: d0 = 2, d1 = 1
    torch.testing.assert_close(plain, torch.tensor([[2.0, 3.0], [2.0, 1.0]]) / torch.tensor([[13.0], [5.0]]).sqrt())
    # CroW channel weights of the crop: box 1 has Q0 = 1/2, Q1 = 1 -> w = log 3, log 1.5; box 2 equal weights
    weighted = box_vectors(x, cam[None], thresholds=(0.1, 0.6))
    v = torch.tensor([2 * np.log(3.0), 3 * np.log(1.5)], dtype=torch.float32)
    torch.testing.assert_close(weighted[0], v / v.norm())
    torch.testing.assert_close(weighted[1], plain[1])
    # two class maps: class-major rows
    assert box_vectors(x, torch.stack([cam, cam]), thresholds=(0.1, 0.6)).shape == (4, 2)
    with pytest.raises(ValueError, match="features"):
        box_vectors(x[None], cam[None])
    with pytest.raises(ValueError, match="cams"):
        box_vectors(x, cam[None, :, :3])


def test_box_rerank_sorts_the_top_by_the_best_box_then_expands_by_hand():
    q = torch.tensor([1.0, 0.0])
    ranking = np.array([2, 0, 1, 3])
    boxes = [torch.tensor([[0.6, 0.8]]),                 # image 2: best box 0.6
             torch.tensor([[0.0, 1.0], [0.75, -0.66]]),  # image 0: best box 0.75
             torch.tensor([[0.8, 0.6]])]                 # image 1: best box 0.8
    assert box_rerank(q, ranking, boxes).tolist() == [1, 0, 2, 3]  # image 3 has no boxes: stays last
    # qe=1: q' ~ (1, 0) + (0.8, 0.6) = (1.8, 0.6): image 2 scores 1.08 + 0.48 = 1.56, image 0 1.35 - 0.396 = 0.954
    assert box_rerank(q, ranking, boxes, qe=1).tolist() == [1, 2, 0, 3]
    # only the top R = len(boxes) move
    assert box_rerank(q, ranking, boxes[:2]).tolist() == [0, 2, 1, 3]
    with pytest.raises(ValueError, match="qe"):
        box_rerank(q, ranking, boxes, qe=4)
    with pytest.raises(ValueError, match="boxes"):
        box_rerank(q, ranking, [torch.ones(1, 3)])
    with pytest.raises(ValueError, match="ranking"):
        box_rerank(q, ranking.astype(float), boxes)


def test_box_vectors_equal_class_weighted_on_each_crop():
    x = torch.relu(torch.randn(6, 7, 9, generator=gen(3), dtype=torch.float64))
    cams = torch.rand(2, 7, 9, generator=gen(4), dtype=torch.float64)
    out = box_vectors(x, cams, thresholds=(0.3, 0.8))
    expected = [class_weighted(x[None, :, y1:y2, x1:x2], cam[None, None, y1:y2, x1:x2])[0, 0]
                for cam in cams for x1, y1, x2, y2 in cam_boxes(cam, (0.3, 0.8))]
    torch.testing.assert_close(out, torch.stack(expected))
