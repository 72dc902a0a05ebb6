"""The training state beside _last: RNG states, the optimizer and the run's counters, written
and read back so that a resumed run continues the same stream (:func:`save_state`,
:func:`load_state`).
"""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np

from ..errors import DarkcfgError


# ----- the training state beside _last ----------------------------------------------------------

STATE_FORMAT = "darkcfg-train"


def _rng_state() -> dict:
    import torch
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
          "numpy_rest": [int(pos), int(has_gauss), float(cached)],
          "python": list(random.getstate()[1]), "python_gauss": random.getstate()[2]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    import torch
    torch.set_rng_state(st["torch"])
    pos, has_gauss, cached = st["numpy_rest"]
    np.random.set_state(("MT19937", st["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                         cached))
    random.setstate((3, tuple(st["python"]), st["python_gauss"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_state(path: str, model, opt, run: dict) -> None:
    """Everything --resume needs to continue exactly: model (with BN statistics), optimizer
    (momentum buffers), the counters, the results so far and every RNG state.  The loader's
    position is (seed, iteration): its samples depend on nothing else.  Atomic."""
    import torch
    from ..outputs import atomic_output
    obj = {"format": STATE_FORMAT, "version": 1, "model": model.state_dict(),
           "optimizer": opt.state_dict(), "rng": _rng_state(), **run}
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def load_state(path: str) -> dict:
    import torch
    if not os.path.exists(path):
        raise DarkcfgError(f"{path}: no training state to resume from (it is written beside "
                           f"_last.weights at each save; without --resume, pass _last.weights "
                           f"as WEIGHTS to continue darknet's way, momentum restarting at 0)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:     # torch raises many kinds for a damaged file
        raise DarkcfgError(f"{path}: not a readable darkcfg training state ({e})") from None
    if not isinstance(obj, dict) or obj.get("format") != STATE_FORMAT:
        raise DarkcfgError(f"{path}: not a darkcfg training state")
    return obj


@contextlib.contextmanager
def _state_fields(path):
    """A training state that torch reads but whose fields are wrong (another program's, or
    edited) is one error naming the file, never a traceback."""
    try:
        yield
    except DarkcfgError as e:
        if path is None:
            raise
        raise DarkcfgError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
        if path is None:
            raise
        raise DarkcfgError(f"{path}: a damaged training state ({type(e).__name__}: "
                           f"{_first_line(e)})") from None


def _first_line(e) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


# ----- a finished run ---------------------------------------------------------------------------

def train_on(folder: str, base: str) -> str:
    """The one way to train on from a finished run, as the messages and the docs say it."""
    return (f"to train on, raise max_batches (in the cfg, or --max-batches) and --resume "
            f"(the same schedule continues); or start a new schedule from the trained weights "
            f"with darknet's -clear: WEIGHTS --clear, e.g. "
            f"{os.path.join(folder, base + '_final.weights')} --clear --out NEW_FOLDER")


def finished(iteration: int, max_batches: int, folder: str, base: str, resumed: bool) -> str:
    """What a run that starts at or past max_batches says: nothing to train, and how to."""
    where = "the run is finished" if resumed else "the weights' seen places the start there"
    return (f"iteration {iteration} >= max_batches {max_batches}: {where}, nothing to train; "
            + train_on(folder, base))
