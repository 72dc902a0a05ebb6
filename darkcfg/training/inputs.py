"""What a run reads, checked before anything is written: the .data file and its lists, the
cfg (its heads, classes and the training options that would spoil a run), and the loader.
"""
from __future__ import annotations

from ..config import cfg as cfgmod
from ..config import shapes
from ..errors import CfgError, DarkcfgError


def head_kind(net) -> str:
    """"yolo" or "keypoint": the heads training has a loss for; CfgError otherwise."""
    kinds = sorted({l.type for l in net.layers if l.head})
    if kinds not in (["yolo"], ["keypoint"]):
        raise CfgError(f"training needs [yolo] or [keypoint] heads (one kind); this cfg has "
                       f"{', '.join(f'[{k}]' for k in kinds) or 'none'}", net.cfg.path)
    return kinds[0]



def _read_data(data_path):
    from ..dataset import data as D
    return D.read_data(data_path)


def _check_data(data_path, cfg_obj, splits) -> None:
    from ..dataset import data as D
    report = D.check(data_path, cfg_obj, splits=splits)
    if not report.ok:
        raise DarkcfgError(f"{data_path}: the data set has problems; nothing was trained:\n"
                           + report.format(limit=20))


def _warn_lint(net) -> None:
    """The cfg's suspicious training options (darkcfg.training.lint), on stderr."""
    import sys
    from .lint import lint
    for w in lint(net):
        print(f"warning: {w}", file=sys.stderr, flush=True)


def _make_loader(dc, net, sched, seed, start, workers, device, rank=0, world_size=1,
                 multiscale="centred", min_visible=None, crop_aspect=None):
    from ..dataset import data as D
    if dc.train is None:
        raise DarkcfgError(f"{dc.path}: no train= list")
    paths = D.image_list(dc.resolve("train"))
    return D.TrainLoader(paths, net, mini_batch=sched.mini_batch,
                         subdivisions=sched.subdivisions, seed=seed, start_iteration=start,
                         workers=workers, pin_memory=str(device).startswith("cuda"),
                         rank=rank, world_size=world_size,
                         max_batches=sched.max_batches, multiscale=multiscale,
                         min_visible=min_visible, crop_aspect=crop_aspect)



def _valid_paths(data_path) -> list:
    """The .data's valid list (its train list when there is none), as darknet's -map uses."""
    from ..dataset import data as D
    dc = _read_data(data_path)
    return D.image_list(dc.resolve("valid") or dc.resolve("train"))


def _load_cfg(cfg):
    if isinstance(cfg, cfgmod.Cfg):
        return cfg
    if isinstance(cfg, shapes.Network):
        return cfg.cfg
    return cfgmod.parse(cfg) if "\n" in str(cfg) else cfgmod.load(str(cfg))


def _check_classes(net, dc, data_path, cfg_name) -> int:
    head_kind(net)
    heads = {l.opts["classes"] for l in net.heads}
    if len(heads) > 1:
        raise CfgError(f"the heads disagree on classes ({sorted(heads)}): pass --classes N "
                       f"to rewrite them all", cfg_name)
    (hc,) = heads
    if dc.classes is not None and dc.classes != hc:
        raise DarkcfgError(
            f"{cfg_name}: the cfg's heads have classes={hc} but {data_path} says "
            f"classes={dc.classes}: pass --classes {dc.classes} (rewrites every head and the "
            f"filters of the conv feeding it, as on the other commands) or fix the cfg")
    return hc



def _run_schedule(net, max_batches, world: int, lr_scale: float = 1.0):
    """The cfg's schedule (``max_batches`` overriding it, and sgdr_cycle with it unless the cfg
    sets one; learning_rate times ``lr_scale``, as darknet's -gpus N multiplies it by N),
    refused where an iteration trains on one image or its forward pass does not split over
    the ``world`` ranks."""
    from .schedule import schedule
    sched = schedule(net)
    sched.learning_rate *= lr_scale
    if max_batches is not None:
        if not net.cfg.net.has("sgdr_cycle"):
            sched.sgdr_cycle = max_batches
        sched.max_batches = max_batches
    if sched.images_per_iteration < 2:
        raise net.cfg.net.error(f"batch={sched.batch} subdivisions={sched.subdivisions} trains "
                                f"on one image per iteration (darknet refuses it too): set e.g. "
                                f"batch=64 subdivisions=16", "batch")
    if sched.mini_batch % world:
        raise net.cfg.net.error(
            f"batch={sched.batch} subdivisions={sched.subdivisions}: the forward pass of "
            f"{sched.mini_batch} images does not split over {world} ranks: make "
            f"batch/subdivisions a multiple of {world}", "batch")
    return sched
