"""Before the notebooks run (nbval, in parallel workers), build the mini benchmark and cache the
Lite0 feature maps the lectures use, once, in the controller process, so that no two notebooks
extract the same maps at the same time and each notebook runs within its budget."""

# (size, layer) of every cached map set the lectures read: lecture 2 onwards use the default,
# lecture 4 adds the seed paper's two smaller resolutions and the penultimate layer.
LECTURE_MAPS = [(None, "last"), (244, "last"), (168, "last"), (None, "penultimate")]


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # an xdist worker: the controller did it already
        return
    paths = [str(a) for a in config.args] or ["."]
    if not any("lectures" in p or "solutions" in p or p in (".", str(config.rootpath)) for p in paths):
        return
    import retrievalkit as rk

    net = rk.models.backbone()
    ds = rk.datasets.load("mini")
    for size, layer in LECTURE_MAPS:
        rk.extract.dataset_maps(net, ds, size=size, layer=layer, progress=False)
