"""Fine-tuning a GeM head on frozen maps: the head, the tuples, the training loop."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retrievalkit import finetune, pooling
from retrievalkit.datasets import mini


def maps_of(labels, C=12, seed=0):
    """Maps of three sizes; items of one label share a pattern of channels, plus noise."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand(max(labels) + 2, C, 1, 1, generator=g) ** 4
    out = []
    for i, lab in enumerate(labels):
        h, w = [(3, 4), (4, 4), (5, 3)][i % 3]
        out.append(patterns[lab] * torch.rand(C, h, w, generator=g) + 0.3 * torch.rand(C, h, w, generator=g))
    return out


def test_an_untrained_head_is_off_the_shelf_gem():
    maps = maps_of([0, 0, 1, 1, 2])
    head = finetune.GeMHead(12)
    with torch.no_grad():
        ours = finetune.embed(head, maps)
    expected = torch.cat([F.normalize(pooling.gem(m[None], p=3.0), dim=1) for m in maps])
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    assert head.gem.p.requires_grad and head.whiten.weight.requires_grad


def test_tuples_pair_each_anchor_with_its_object_and_its_hardest_other_items():
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 1, -1, -1, 2])  # distractors (-1) and a lone item (2): never anchors
    D = F.normalize(torch.randn(8, 5, generator=torch.Generator().manual_seed(1)), dim=1)
    a, p, n = finetune.mine_tuples(D, labels, 3, rng)
    assert a.tolist() == [0, 1, 2, 3, 4]
    assert all(labels[i] == labels[j] and i != j for i, j in zip(a, p))
    S = (D @ D.T).numpy()
    for i, negs in zip(a, n):  # brute force: the 3 most similar items of another label, most similar first
        others = [j for j in range(8) if labels[j] != labels[i]]
        assert negs.tolist() == sorted(others, key=lambda j: -S[i, j])[:3]


@pytest.mark.parametrize("loss, margin", [("contrastive", 0.7), ("triplet", 0.1), ("classification", 0.0)])
def test_training_lowers_the_loss_and_separates_the_objects(loss, margin):
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, -1, -1]
    maps = maps_of(labels, seed=2)
    head = finetune.GeMHead(12)
    lab = np.array(labels)

    def margin_gap():  # mean similarity to the same object minus to the others, over the objects' items
        with torch.no_grad():
            E = finetune.embed(head, maps)
        S, same = E @ E.T, torch.from_numpy(lab[:, None] == lab[None, :])
        keep = torch.from_numpy(lab >= 0)
        pos = (same & ~torch.eye(len(lab), dtype=torch.bool))[keep]
        return float(S[keep][pos].mean() - S[keep][~same[keep]].mean())

    before = margin_gap()
    history = finetune.train(head, maps, lab, loss, epochs=40, lr=1e-2, margin=margin, n_negatives=3, seed=0)
    assert len(history["loss"]) == 40 and history["loss"][-1] < 0.7 * history["loss"][0]
    assert margin_gap() > before


def test_training_is_deterministic_for_a_seed_and_stops_at_the_time_limit():
    labels = np.array([0, 0, 1, 1, 2, 2])
    maps = maps_of(labels.tolist(), seed=3)
    runs = []
    for _ in range(2):
        head = finetune.GeMHead(12)
        runs.append(finetune.train(head, maps, labels, "contrastive", epochs=5, lr=1e-2, n_negatives=3, seed=7))
    assert runs[0] == runs[1]
    assert len(finetune.train(finetune.GeMHead(12), maps, labels, epochs=50, n_negatives=3, time_limit=1e-9)["loss"]) == 1


def test_bad_training_input_names_the_argument():
    maps = maps_of([0, 0, 1, 1])
    head = finetune.GeMHead(12)
    with pytest.raises(ValueError, match="loss"):
        finetune.train(head, maps, [0, 0, 1, 1], "hinge")
    with pytest.raises(ValueError, match="labels"):
        finetune.train(head, maps, [0, 0, 1])
    with pytest.raises(ValueError, match="labels"):
        finetune.train(head, maps, [0, 1, 2, 3])  # no object seen twice: no anchor
    with pytest.raises(ValueError, match="labels"):
        finetune.train(head, maps, [0, 0, -1, -1], "classification")
    with pytest.raises(ValueError, match="maps"):
        finetune.embed(head, [])


def test_training_views_are_deterministic_object_major_and_benchmark_sized():
    images, labels = mini.training_views(n_objects=3, views=2, seed=5)
    again, _ = mini.training_views(n_objects=3, views=2, seed=5)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert all(im.size in mini.CANVASES for im in images)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))
    other, _ = mini.training_views(n_objects=3, views=2, seed=6)
    assert not np.array_equal(np.asarray(images[0]), np.asarray(other[0]))
    with pytest.raises(ValueError, match="views"):
        mini.training_views(views=1)


def test_validation_map_by_hand_and_early_stopping_keeps_the_best_epoch():
    # 4 items: 0 and 1 one object, 2 and 3 another; one-hot maps make the ranking obvious
    maps = [torch.zeros(4, 2, 2) for _ in range(4)]
    for m, ch in zip(maps, [0, 0, 1, 2]):
        m[ch] = 1.0
    maps[2][3] = 0.5  # 2 and 3 share a weaker channel: 3's nearest other item is 2
    maps[3][3] = 0.5
    head = finetune.GeMHead(4)
    # 0 -> 1 first (AP 1), 1 -> 0 first (AP 1), 2 -> 3 first (AP 1), 3 -> 2 first (AP 1)
    assert finetune.validation_map(head, maps, [0, 0, 1, 1]) == pytest.approx(100.0)
    # with 2 and 3 labelled apart, 0 and 1 still find each other, 2 and 3 have no positive: left out
    assert finetune.validation_map(head, maps, [0, 0, -1, -1]) == pytest.approx(100.0)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    train_maps = maps_of(labels.tolist(), seed=4)
    scores = iter([5.0, 7.0, 9.0, 6.0, 1.0])  # before training, then after each of 4 epochs
    snapshots = []

    def validate(h):
        snapshots.append(h.whiten.weight.detach().clone())
        return next(scores)

    head = finetune.GeMHead(12)
    history = finetune.train(head, train_maps, labels, epochs=4, lr=1e-2, n_negatives=3, validate=validate)
    assert history["val"] == [5.0, 7.0, 9.0, 6.0, 1.0]
    torch.testing.assert_close(head.whiten.weight, snapshots[2])  # the head of epoch 2, the best
    assert not torch.equal(snapshots[2], snapshots[4])


def test_the_gem_exponent_learns_ten_times_faster_and_stays_at_least_1():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    maps = maps_of(labels.tolist(), seed=5)
    head = finetune.GeMHead(12)
    finetune.train(head, maps, labels, "contrastive", epochs=1, lr=1e-3, n_negatives=3)
    # Adam's first step moves every parameter by about its learning rate
    assert abs(float(head.gem.p.detach()) - 3.0) == pytest.approx(1e-2, rel=0.05)
    assert (head.whiten.weight.detach() - torch.eye(12)).abs().max() == pytest.approx(1e-3, rel=0.05)
    # here the classifier drives p down (below 0 without the bound, a ValueError in GeM)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, -1, -1])
    low = finetune.GeMHead(12)
    finetune.train(low, maps_of(labels.tolist(), seed=2), labels, "classification", epochs=40, lr=1e-2)
    assert float(low.gem.p.detach()) == 1.0


def test_the_mini_training_set_holds_no_test_object_and_keeps_validation_apart():
    import retrievalkit as rk

    net = rk.models.backbone()
    ds = rk.datasets.load("mini")
    _, xmaps = rk.extract.dataset_maps(net, ds, progress=False)  # the lectures' cache
    data = finetune.mini_training_set(net, ds, xmaps, n_objects=3, views=2, held_out=1, seed=0)
    train = [i for i, s in enumerate(ds.info["split"]) if s == "train"]
    objects = np.array(ds.info["objects"])
    n_real = len(train)
    assert data.labels[:n_real].tolist() == objects[train].tolist()
    test_objects = {o for o, s in zip(objects, ds.info["split"]) if s == "test" and o >= 0}
    assert not test_objects & set(data.labels.tolist())
    assert data.labels[n_real:].tolist() == [100, 100, 101, 101] and data.val_labels.tolist() == [2, 2]
    assert all(m is xmaps[i] for m, i in zip(data.maps, train))
    assert len(data.maps) == len(data.images) == len(data.labels) and len(data.val_maps) == 2
    assert all(m.shape[0] == xmaps[0].shape[0] for m in data.maps[n_real:] + data.val_maps)
    with pytest.raises(ValueError, match="held_out"):
        finetune.mini_training_set(net, ds, xmaps, n_objects=3, held_out=3)


def test_the_training_views_maps_are_cached_exactly(tmp_path, monkeypatch):
    import retrievalkit as rk
    from retrievalkit import extract

    monkeypatch.setenv("RETRIEVALKIT_DATA", str(tmp_path))  # the cache's "default" folder: tmp_path/features
    net = rk.models.backbone()
    pictures, _ = rk.datasets.mini.training_views(n_objects=2, views=2, seed=0)
    direct = extract.feature_maps(net, pictures, progress=False, num_workers=0)
    calls = []
    real = extract.feature_maps
    monkeypatch.setattr(extract, "feature_maps", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = finetune._picture_maps(net, pictures)
    second = finetune._picture_maps(net, pictures)
    assert calls == [1] and len(list((tmp_path / "features").glob("training-views-*.pt"))) == 1
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(direct, first, second))  # float32, exact
    finetune._picture_maps(net, pictures[:3])  # other pictures: computed, not read
    assert calls == [1, 1]
