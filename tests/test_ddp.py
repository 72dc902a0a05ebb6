"""DDP through torchrun on CPU (gloo): 2 ranks x half of every forward pass train the same
weights as 1 process x the whole batch - the update is darknet's mean gradient over the GLOBAL
batch.  The cfg has no batch norms: with them each rank's BN sees only its share (SyncBN is
CUDA-only in PyTorch), which is the one difference DDP may make."""
import os
import subprocess
import sys

import numpy as np
import pytest

from darkcfg import cfg as cfgmod
from darkcfg import demo
from darkcfg import train as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(tmp):
    paths = demo.shapes(os.path.join(tmp, "img"), 8, seed=3)
    with open(os.path.join(tmp, "train.txt"), "w") as f:
        f.write("\n".join(paths) + "\n")
    data = os.path.join(tmp, "obj.data")
    with open(data, "w") as f:
        f.write(f"classes=2\ntrain={tmp}/train.txt\n")
    cfg_path = os.path.join(tmp, "nobn.cfg")
    demo.small_cfg(os.path.join(ROOT, "cfgs", "yolov3-tiny.cfg"), cfg_path, size=32,
                   width_scale=0.25, batch=4, subdivisions=2, burn_in=0, max_batches=3,
                   learning_rate=0.01)
    cfg = cfgmod.load(cfg_path)
    for sec in cfg.layers:
        if sec.type in ("convolutional", "conv") and sec.has("batch_normalize"):
            sec.set("batch_normalize", 0)
    cfgmod.save(cfg, cfg_path)
    return data, cfg_path


def _floats(path):
    return np.fromfile(path, dtype=np.float32)[5:]     # after darknet's 20-byte header


def test_two_ranks_train_the_one_process_weights(tmp_path):
    data, cfg = _setup(str(tmp_path))
    one = T.train(data, cfg, out=str(tmp_path / "one"), quiet=True, check_data=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", "-m", "darkcfg", "train", data, cfg,
                        "--out", str(tmp_path / "two"), "--workers", "0", "-q"],
                       env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    a = _floats(one.files["final"])
    b = _floats(str(tmp_path / "two" / "nobn_final.weights"))
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1e-5, np.abs(a - b).max()
    from darkcfg import model as M
    from darkcfg import shapes
    from darkcfg import weights as W
    init = M.Darknet(shapes.network(cfg))
    T.darknet_init_(init, seed=0)
    W.save_darknet(init, str(tmp_path / "init.weights"), W.Header(seen=0))
    assert np.abs(a - _floats(str(tmp_path / "init.weights"))).max() > 1e-3   # it trained


def test_a_forward_pass_that_does_not_split_over_the_ranks_is_refused(tmp_path):
    data, cfg = _setup(str(tmp_path))            # mini_batch 2 over 3 ranks
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "3", "-m", "darkcfg", "train", data, cfg,
                        "--out", str(tmp_path / "three"), "--workers", "0", "-q"],
                       env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode != 0
    assert "does not split over 3 ranks" in r.stdout + r.stderr
    assert not (tmp_path / "three" / "nobn_final.weights").exists()
    assert not (tmp_path / "two" / "nobn_final.weights.tmp").exists()
