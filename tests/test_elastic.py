"""Training that survives the cluster (issue #27): a torchrun elastic restart continues the run
from <cfg>_last.state by itself, a SIGTERM to the whole group then ``--resume`` continues it
exactly, and ``--resume auto`` resumes where a state exists and starts fresh where none does.

Every run here is 2 gloo ranks on CPU of the same tiny cfg (no batch norms, 32 px, 6
iterations, savelast=2), compared with one run of the same command that nothing interrupted:
the two ranks add the same two numbers in every all-reduce whichever way the run went, so the
weights must agree to the bit, not to a tolerance.  Each test also checks that the run really
resumed (at an iteration past 0): a run started over from scratch would end on the same bytes.
"""
import os
import re
import socket
import subprocess
import sys

import pytest

from darkcfg.training import train as T

from test_ddp import _env, _setup

ITERATIONS = 6

# the CLI under torchrun, with a callback: at iteration AT, the process of rank RANK (in the
# group's first attempt only) sends SIG to itself ("self") or to the torchrun agent ("agent")
RUN = """
import os, signal, sys
from darkcfg.training import train as T
from darkcfg.cli import main
rank, at, sig, whom = sys.argv[1:5]
def hook(iteration, model):
    if (os.environ["RANK"] == rank and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0"
            and iteration == int(at)):
        os.kill(os.getpid() if whom == "self" else os.getppid(), getattr(signal, sig))
train = T.train
T.train = lambda *a, **k: train(*a, callback=hook, **k)
main(sys.argv[5:], prog_name="darkcfg")
"""


def _torchrun(tmp, out, *args, hook=("-", 0, "SIGKILL", "self"), restarts=0):
    script = os.path.join(tmp, "run.py")
    with open(script, "w") as f:
        f.write(RUN)
    data, cfg = os.path.join(tmp, "obj.data"), os.path.join(tmp, "nobn.cfg")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "--max-restarts", str(restarts), script, *map(str, hook), "train", data, cfg,
           "--out", out, "--workers", "0", "--max-batches", str(ITERATIONS),
           "--dist-timeout", "60", *args]      # a collective stuck on a dead rank fails soon
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _losses(folder):
    with open(os.path.join(folder, "results.csv")) as f:
        rows = [l.split(",") for l in f.read().splitlines()]
    col = rows[0].index("loss")
    return [r[col] for r in rows[1:]]


def _resumed_at(text):
    """The iterations the log says the run resumed at."""
    return [int(m) for m in re.findall(r"resumed from \S+ at iteration (\d+)", text)]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """(tmp folder with the data set and cfg, the folder of a run nothing interrupted)."""
    tmp = str(tmp_path_factory.mktemp("elastic"))
    _setup(tmp, extra="savelast=2\n")
    out = os.path.join(tmp, "straight")
    r = _torchrun(tmp, out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return tmp, out


def test_an_elastic_restart_after_a_killed_rank_continues_the_run_exactly(straight):
    """Rank 1 SIGKILLed at iteration 3 (the last state at 2, or at 3 where rank 0 saved on the
    agent's SIGTERM); torchrun --max-restarts 1 restarts both ranks, which resume by
    themselves - no --resume on the command line."""
    tmp, ref = straight
    out = os.path.join(tmp, "killed")
    r = _torchrun(tmp, out, hook=(1, 3, "SIGKILL", "self"), restarts=1)
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-4000:]
    assert "-9" in text or "SIGKILL" in text, text[-4000:]          # rank 1 did die
    resumed = _resumed_at(text)
    assert resumed and 2 <= resumed[0] <= 3, text[-4000:]
    assert _bytes(os.path.join(out, "nobn_final.weights")) == \
        _bytes(os.path.join(ref, "nobn_final.weights"))
    assert _losses(out) == _losses(ref)


def test_a_ddp_group_stopped_by_sigterm_resumes_exactly(straight):
    """The torchrun agent SIGTERMed at iteration 3 (as a scheduler stops a job): it stops both
    ranks, rank 0 saves; ``--resume`` under torchrun continues to the same bytes."""
    tmp, ref = straight
    out = os.path.join(tmp, "stopped")
    r = _torchrun(tmp, out, hook=(0, 3, "SIGTERM", "agent"))
    assert r.returncode != 0, (r.stdout + r.stderr)[-4000:]
    assert not os.path.exists(os.path.join(out, "nobn_final.weights"))
    r = _torchrun(tmp, out, "--resume")
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-4000:]
    assert _resumed_at(text) and _resumed_at(text)[0] >= 2, text[-4000:]
    assert _bytes(os.path.join(out, "nobn_final.weights")) == \
        _bytes(os.path.join(ref, "nobn_final.weights"))
    assert _losses(out) == _losses(ref)


def test_two_nodes_on_one_machine_train_the_one_node_run(straight):
    """The README's multi-machine command, its two "machines" started as two torchrun agents
    here (--nnodes 2 --nproc-per-node 1, c10d rendezvous on localhost): the same losses and,
    with 2 ranks adding the same two numbers, the same bytes as one node with 2 processes."""
    tmp, ref = straight
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = os.path.join(tmp, "nodes")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node",
           "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id",
           f"test{port}", "-m", "darkcfg", "train", os.path.join(tmp, "obj.data"),
           os.path.join(tmp, "nobn.cfg"), "--out", out, "--workers", "0", "--max-batches",
           str(ITERATIONS), "--dist-timeout", "60", "-q"]
    nodes = [subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    try:
        logs = [n.communicate(timeout=300)[0] for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(l[-2000:] for l in logs)
    assert _losses(out) == _losses(ref)
    assert _bytes(os.path.join(out, "nobn_final.weights")) == \
        _bytes(os.path.join(ref, "nobn_final.weights"))


def test_resume_auto_starts_fresh_then_resumes(tmp_path):
    """One process: --resume auto in an empty folder starts a run; stopped after 2 iterations
    and run again by the same CLI command (with a WEIGHTS file, which a fresh run would start
    from), it resumes instead and ends on the bytes of a straight 4-iteration run."""
    from click.testing import CliRunner
    from darkcfg.cli import main
    data, cfg = _setup(str(tmp_path), extra="savelast=1\n")
    kw = dict(quiet=True, check_data=False)
    straight = T.train(data, cfg, out=str(tmp_path / "straight"), max_batches=4, **kw)
    out = str(tmp_path / "auto")
    first = T.train(data, cfg, out=out, resume="auto", max_batches=2, **kw)
    assert first.iteration == 2 and [r["iteration"] for r in first.rows] == [1, 2]
    r = CliRunner().invoke(main, ["train", data, cfg, straight.files["final"], "--out", out,
                                  "--resume", "auto", "--max-batches", "4", "--workers", "0"])
    assert r.exit_code == 0, r.output
    assert "resumed from" in r.output and "at iteration 2" in r.output
    assert _bytes(os.path.join(out, "nobn_final.weights")) == _bytes(straight.files["final"])
    assert _losses(out) == [f"{x['loss']}" for x in straight.rows]


def test_resume_takes_no_other_value(tmp_path):
    from click.testing import CliRunner
    from darkcfg.cli import main
    data, cfg = _setup(str(tmp_path))
    r = CliRunner().invoke(main, ["train", "--resume", data, cfg])
    assert r.exit_code == 2 and "--resume takes no value, or 'auto'" in r.output, r.output
