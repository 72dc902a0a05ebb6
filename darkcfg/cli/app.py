"""The `darkcfg` command line.  The click group; the commands live in one module
per group beside it (files, infer, data, run), all of them thin: parse, call one library
function, print.  Only darkcfg.cli imports click.

Exit codes, one rule for every command: 0 success; 1 a problem with an input file's contents
(one line ``Error: ...``, no traceback) or with writing an output; 2 bad arguments, a path on
the command line that does not exist among them (click's usage errors); 128 + the signal's
number when ``train`` is stopped by Ctrl-C (130), SIGHUP (129) or SIGTERM (143) after saving;
141 the reader of the output went away (``| head``), silently, as for any tool stopped by
SIGPIPE.

Every command that writes follows one rule (darkcfg.io.check_outputs, checked before any work):
an output is never an input, and an existing output is replaced only with --force.
"""
from __future__ import annotations

import os
import sys

import click

from ..errors import DarkcfgError
from . import files
from . import infer
from . import data
from . import run
from . import darknet


class _Group(click.Group):
    """Turns every DarkcfgError (and OS errors on outputs) into ``Error: ...`` and exit 1."""

    def parse_args(self, ctx, args):
        """darknet's spellings (detector ..., -map, -thresh) become darkcfg's first."""
        return super().parse_args(ctx, darknet.translate(args))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DarkcfgError as e:
            raise click.ClickException(str(e)) from None
        except BrokenPipeError:
            _quiet_stdout()
            sys.exit(141)
        except OSError as e:
            raise click.ClickException(f"{e.filename or ''}: {e.strerror or e}") from None


def _quiet_stdout():
    """After EPIPE: point stdout at /dev/null so Python's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


@click.group(cls=_Group, context_settings=dict(help_option_names=["-h", "--help"]))
@click.version_option(package_name="darkcfg")
def main():
    """darknet .cfg files as exact PyTorch models.

    With no CFG, commands use the bundled cfgs/yolo_ref.cfg (and read a .weights file in
    the bundled cfgs/yolov3.cfg's layer order, darknet's yolov3.weights).  Every command
    has --help.  Exit codes: 0 success, 1 a bad input file (one line Error: ...),
    2 bad arguments (a missing input path among them), 130/143/129 train stopped by
    Ctrl-C/SIGTERM/SIGHUP (after saving), 141 the reader of the output went away (| head).  Outputs never replace an input, and replace an existing file
    only with --force.
    """


main.add_command(files.summary)
main.add_command(files.convert)
main.add_command(files.init)
main.add_command(files.build)
main.add_command(infer.detect)
main.add_command(infer.export)
main.add_command(data.anchors)
main.add_command(data.data)
main.add_command(run.map_)
main.add_command(run.train)
main.add_command(darknet.detector)
