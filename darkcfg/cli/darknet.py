"""darknet's spellings: ``darkcfg detector train|test|map|calc_anchors ...`` and darknet's
single-dash flags (``-map``, ``-thresh 0.25``, ``-dont_show``), so a darknet command line runs
with ``darkcfg`` in place of ``./darknet``.

One translation, applied to the argument list before click parses it (:func:`translate`):
darknet's flags become darkcfg's ``--`` options, display flags are dropped with one note on
stderr, flags with no darkcfg equivalent are a usage error naming them, and ``detector <sub>``
is rewritten to the darkcfg command that does the same job.  darknet removes its flags from
argv before it reads the positional arguments (find_arg/find_int_arg del_arg them), so the
positions of DATA, CFG, WEIGHTS and the image are counted the same way here.
"""
from __future__ import annotations

import click

# darknet flag -> (darkcfg option, takes a value)
FLAGS = {
    "-map": ("--map", False),
    "-clear": ("--clear", False),
    "-thresh": ("--thresh", True),
    "-iou_thresh": ("--iou-thresh", True),
    "-points": ("--points", True),
    "-letter_box": ("--letter-box", False),
    "-num_of_clusters": ("--num", True),
    "-width": ("--width", True),
    "-height": ("--height", True),
    "-ext_output": ("--ext-output", False),
    "-out": ("--json", True),
    "-save_labels": ("--save-labels", False),
}
# accepted and ignored: flag -> (takes a value, why)
IGNORED = {
    "-dont_show": (False, "no window is shown"),
    "-show_imgs": (False, "no window is shown"),
    "-show": (False, "no window is shown"),
    "-mjpeg_port": (True, "no window is shown"),
    "-json_port": (True, "no window is shown"),
    "-gpus": (True, "one process trains on --device (default cpu); several GPUs: torchrun "
                    "(docs: training)"),
    "-i": (True, "one process trains on --device (default cpu)"),
    "-nogpu": (False, "the default --device is cpu"),
}
# darknet flags darkcfg has no equivalent for (the usage error names them)
UNSUPPORTED = ("-prefix", "-avgframes", "-hier",
               "-http_post_host", "-time_limit_sec", "-check_mistakes", "-benchmark",
               "-benchmark_layers", "-out_filename", "-random", "-calc_map", "-dontuse_opencv",
               "-show_details")
SUBCOMMANDS = ("train", "test", "map", "calc_anchors", "demo", "valid")


def translate(args: list) -> list:
    """darkcfg's arguments for ``args`` (the words after ``darkcfg``), darknet's spellings
    rewritten; UsageError for a darknet flag darkcfg cannot honour."""
    args = list(args)
    end = args.index("--") if "--" in args else len(args)
    words, ignored = _flags(args[:end])
    if ignored:
        click.echo(f"note: darknet's {', '.join(ignored)} ignored: "
                   + "; ".join(sorted({IGNORED[f][1] for f in ignored})), err=True)
    words += args[end:]
    if len(words) >= 2 and words[0] == "detector" and words[1] in SUBCOMMANDS:
        return _detector(words[1], words[2:])
    if words and words[0] == "partial":
        return _partial(words[1:])
    return words


def _partial(words: list) -> list:
    """darknet's ``partial CFG WEIGHTS OUT N`` (the first N layers, a backbone to start from)
    -> ``convert WEIGHTS OUT --cfg CFG --cutoff N``."""
    pos, opts = _positionals(words)
    if len(pos) != 4:
        raise click.UsageError("partial needs CFG WEIGHTS OUT N, as darknet's "
                               "(./darknet partial cfg/yolov3-tiny.cfg yolov3-tiny.weights "
                               "yolov3-tiny.conv.15 15)")
    cfg, weights, out, n = pos
    return ["convert", weights, out, "--cfg", cfg, "--cutoff", n, *opts]


def _flags(args: list) -> tuple:
    """(args with darknet's flags rewritten or dropped, the ignored flags in order)."""
    out, ignored, i = [], [], 0
    while i < len(args):
        a = args[i]
        if a in FLAGS:
            out.append(FLAGS[a][0])
        elif a in IGNORED:
            ignored += [a] if a not in ignored else []
            i += 1 + (IGNORED[a][0] and i + 1 < len(args))
            continue
        elif a in UNSUPPORTED:
            raise click.UsageError(f"darknet's {a} has no darkcfg equivalent (darkcfg --help "
                                   f"lists the commands, darkcfg COMMAND --help their options)")
        else:
            out.append(a)
        i += 1
    return out, ignored


def _positionals(words: list) -> tuple:
    """(positional words, option words) of a translated list: a ``--opt`` that takes a value
    keeps it (only ``--`` options remain after :func:`_flags`; flags are those of FLAGS)."""
    flags = {o for o, takes in FLAGS.values() if not takes} | {
        "--quiet", "-q", "--force", "--resume", "--json", "--coco", "--sync-bn",
        "--channels-last", "--compile", "--no-decode", "--help", "-h"}
    pos, opts, i = [], [], 0
    while i < len(words):
        w = words[i]
        if w.startswith("-") and len(w) > 1:
            takes = w not in flags and "=" not in w
            opts += words[i:i + 1 + takes]
            i += 1 + takes
        else:
            pos.append(w)
            i += 1
    return pos, opts


def _detector(sub: str, words: list) -> list:
    """``detector <sub> ...`` as the darkcfg command that does the job."""
    pos, opts = _positionals(words)
    if sub == "train":
        return ["train", *pos, *opts]
    if sub == "map":
        return ["map", *pos, *opts]
    if sub == "test":
        return _test(pos, opts)
    if sub == "calc_anchors":
        return _calc_anchors(pos, opts)
    if sub == "demo":
        return _demo(pos, opts)
    raise click.UsageError("darknet's detector valid (result files for an evaluation server) "
                           "has no darkcfg equivalent: darkcfg map DATA CFG WEIGHTS "
                           "--save-detections FILE.json writes the detections as COCO json")


def _test(pos: list, opts: list) -> list:
    """detector test DATA CFG WEIGHTS [IMAGE] -> detect IMAGE --cfg CFG --weights WEIGHTS
    --names <the .data's names>; without IMAGE detect reads a list on stdin (darknet's
    ``< list.txt``: it reads the image paths at its prompt)."""
    if len(pos) < 3:
        raise click.UsageError("detector test needs DATA CFG WEIGHTS [IMAGE]")
    data, cfg, weights, images = pos[0], pos[1], pos[2], pos[3:]
    names = _data_value(data, "names")
    return ["detect", *images, "--cfg", cfg, "--weights", weights,
            *(["--names", names] if names else []), *opts]


def _demo(pos: list, opts: list) -> list:
    """detector demo DATA CFG WEIGHTS [VIDEO or URL] -> detect VIDEO --cfg CFG --weights
    WEIGHTS --names <the .data's names>; without a video, camera 0 (darknet's default)."""
    if len(pos) < 3:
        raise click.UsageError("detector demo needs DATA CFG WEIGHTS [VIDEO]")
    data, cfg, weights, rest = pos[0], pos[1], pos[2], pos[3:]
    names = _data_value(data, "names")
    return ["detect", *(rest or ["--camera", "0"]), "--cfg", cfg, "--weights", weights,
            *(["--names", names] if names else []), *opts]


def _calc_anchors(pos: list, opts: list) -> list:
    """detector calc_anchors DATA -> anchors <the .data's train list>, darknet's 5 clusters
    unless -num_of_clusters says otherwise."""
    if len(pos) != 1:
        raise click.UsageError("detector calc_anchors needs DATA (one .data file)")
    train = _data_value(pos[0], "train")
    if not train:
        raise click.UsageError(f"{pos[0]}: has no train= list for calc_anchors")
    return ["anchors", train, *([] if "--num" in opts else ["--num", "5"]), *opts]


def _data_value(path: str, key: str):
    """A .data file's ``key`` as a path (resolved as training resolves it), or None."""
    from ..dataset import data as D
    from ..errors import DarkcfgError
    try:
        return D.read_data(path).resolve(key)
    except DarkcfgError as e:
        raise click.UsageError(str(e)) from None
    except OSError as e:
        raise click.UsageError(f"{path}: {e.strerror or e}") from None


@click.command(short_help="darknet's spelling: detector train|test|map|calc_anchors ...",
               context_settings=dict(ignore_unknown_options=True, allow_extra_args=True))
@click.argument("words", nargs=-1, type=click.UNPROCESSED)
def detector(words):
    """darknet's command line, with darkcfg in place of ./darknet:

    \b
      detector train DATA CFG [WEIGHTS] [-map] [-clear]      -> darkcfg train
      detector map DATA CFG WEIGHTS [-thresh T] [-iou_thresh T] [-points N] -> darkcfg map
      detector test DATA CFG WEIGHTS [IMAGE] [-thresh T]     -> darkcfg detect (names from DATA)
      detector calc_anchors DATA [-num_of_clusters N] [-width W] [-height H] -> darkcfg anchors
      detector demo DATA CFG WEIGHTS [VIDEO]                 -> darkcfg detect (camera 0 without)

      partial CFG WEIGHTS OUT N                               -> darkcfg convert --cutoff N

    darknet's display flags (-dont_show, -show_imgs, -mjpeg_port N) and -gpus are accepted
    and ignored, with one note on stderr; -ext_output, -out FILE and -save_labels are detect's
    --ext-output, --json FILE and --save-labels; darkcfg's own --options may follow.
    detector valid has no equivalent (an error says what to use).
    """
    sub = words[0] if words else "(none)"
    raise click.UsageError(f"detector {sub}: darknet's detector subcommands darkcfg runs are "
                           f"{', '.join(SUBCOMMANDS[:5])}")
