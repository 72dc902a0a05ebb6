"""Shared fixtures.  Tests that need ../shared (darknet's cfgs and reference numbers) skip
cleanly when it is absent."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
CFGS = os.path.join(ROOT, "cfgs")
DARKNET_CFGS = os.path.join(SHARED, "darknet-cfgs")
REFERENCE = os.path.join(SHARED, "reference")
MAKE_WEIGHTS = os.path.join(REFERENCE, "make_weights.py")



def pytest_configure(config):
    """Under pytest-xdist (pyproject's addopts: one worker per core), each worker's torch and
    the processes it starts (torchrun ranks, CLI runs) share the cores instead of each taking
    all of them (2 workers x 2 threads on 2 cores would oversubscribe them)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        os.environ["OMP_NUM_THREADS"] = threads
        import torch
        torch.set_num_threads(int(threads))


needs_shared = pytest.mark.skipif(not os.path.isdir(REFERENCE),
                                  reason="../shared/reference is not here")

# darknet's own README: the 9 cfgs AlexeyAB darknet cannot parse
DARKNET_REJECTS = {"rnn", "rnn.train", "gru", "lstm.train", "crnn.train", "resnet50", "resnet101",
                   "resnet152", "resnext152-32x4d"}


def darknet_cfgs():
    if not os.path.isdir(DARKNET_CFGS):
        return []
    paths = sorted(glob.glob(os.path.join(DARKNET_CFGS, "*.cfg"))
                   + glob.glob(os.path.join(DARKNET_CFGS, "yolov1", "*.cfg")))
    return paths


def cfg_id(path):
    return os.path.relpath(path, DARKNET_CFGS)[:-4]


def parsed_by_darknet():
    return [p for p in darknet_cfgs() if os.path.basename(p)[:-4] not in DARKNET_REJECTS]


def reference_summary_all():
    """cfg_summary_all.json: darknet's figures for every cfg in ../shared/darknet-cfgs/ (86
    parsed, 9 rejected with its message); {} without ../shared."""
    path = os.path.join(REFERENCE, "cfg_summary_all.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def reference_summary():
    path = os.path.join(REFERENCE, "cfg_summary.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="session")
def make_weights(tmp_path_factory):
    """Synthetic darknet weights from the reference's independent numpy writer, cached."""
    cache = {}
    folder = tmp_path_factory.mktemp("weights")

    def make(cfg_path, seed=1):
        with open(cfg_path, "rb") as f:           # by content: tmp paths get reused
            key = (hashlib.sha1(f.read()).hexdigest(), seed)
        if key not in cache:
            out = folder / f"{len(cache)}-{os.path.basename(cfg_path)}.{seed}.weights"
            subprocess.run([sys.executable, MAKE_WEIGHTS, cfg_path, str(seed), str(out)],
                           check=True, capture_output=True)
            cache[key] = str(out)
        return cache[key]
    return make


@pytest.fixture
def darknet_at(tmp_path, make_weights):
    """darknet's cfg NAME rewritten to SIZE x SIZE (batch 1), saved, with make_weights.py
    weights: returns (cfg path, weights path)."""
    from darkcfg.config import cfg as C

    def make(name, size=128):
        cfg = C.rewrite(C.load(os.path.join(DARKNET_CFGS, f"{name}.cfg")), width=size,
                        height=size, batch=1)
        path = str(tmp_path / f"{name.replace('/', '-')}-{size}.cfg")
        C.save(cfg, path)
        return path, make_weights(path)
    return make


def write_counting_weights(path, floats):
    """A .weights file (version 0.2.5) whose k-th float is k: offsets readable by eye."""
    import struct
    import numpy as np
    with open(path, "wb") as f:
        f.write(struct.pack("<iiiQ", 0, 2, 5, 0))
        f.write(np.arange(floats, dtype="<f4").tobytes())
    return str(path)


@contextlib.contextmanager
def _locked(path):
    """An exclusive lock on ``path`` shared by the xdist workers (none where fcntl is not)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, worker_id):
    """The learning test's model: yolov3-tiny at 96x96, half width, 2 classes, train's
    defaults: 300 iterations of 16 images (2 subdivisions) on 256 generated images, steps
    schedule.  Trained once per session: the first xdist worker to need it trains it in the
    workers' shared temp folder under a lock, the others wait and read its result (the
    scheduler is ``--dist load``, which survives a crashed worker; ``loadgroup``, which kept
    these tests on one worker, hangs pytest-xdist 3.8 after a crash)."""
    import pickle
    from darkcfg.training import train as T
    from _helpers import make_cfg, make_data
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent                     # the folder every worker's basetemp is in
    tmp, result = root / "learn", root / "learn.pickle"
    with _locked(root / "learn.lock"):
        if not result.exists():
            tmp.mkdir(exist_ok=True)
            data = make_data(tmp, ntrain=256, nvalid=32)
            cfg = make_cfg(tmp / "tiny.cfg", size=96, width_scale=0.5, batch=16,
                           subdivisions=2, learning_rate=0.005, burn_in=30, max_batches=300,
                           steps="200,260")
            r = T.train(data, cfg, quiet=True, seed=0)
            with open(root / "learn.part", "wb") as f:
                pickle.dump((data, cfg, r), f)
            os.replace(root / "learn.part", result)
    with open(result, "rb") as f:
        return pickle.load(f)
