"""The `crossdistill` command: a thin layer over the library.

  train.py    bridge train | bank | eval, distill, demo, config list | keys
  infer.py    generate, eval, bench, app, convert-inception
  hub.py      push, card
  domains.py  presets, <domain> export | pretrain
  options.py  the options the commands share

User errors (`CrossdistillError`) print one line and exit 2; nothing else is caught.
"""

from __future__ import annotations

import sys

import typer

from ..errors import CrossdistillError
from . import domains, hub, infer, train

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="One-step text-to-image Students from Teachers in a different latent space.")
for _module in (train, infer, hub):
    _module.register(app)
domains.register(app)   # last: a domain may not take a command's name


def _quiet_library_bars() -> None:
    """Our own progress bars stay; the libraries' per-file loading bars go (one-line errors)."""
    try:
        import diffusers.utils.logging as dl
        import transformers.utils.logging as tl

        dl.disable_progress_bar()
        tl.disable_progress_bar()
        dl.set_verbosity_error()      # diffusers' warnings would precede our one-line error
    except Exception:
        pass


def expand_set(args: list[str]) -> list[str]:
    """`--set a=1 b=2` -> `--set a=1 --set b=2`: the words after one --set that look like
    key=value (and are not options) are overrides too."""
    out, value_next, in_set = [], False, False
    for a in args:
        if value_next:                       # the value of a --set
            value_next, in_set = False, True
        elif a == "--set":
            value_next = True
        elif a.startswith("--set="):
            in_set = True
        elif in_set and not a.startswith("-") and "=" in a:
            out.append("--set")
        else:
            in_set = False
        out.append(a)
    return out


def _click_exceptions():
    """The click exceptions typer raises (its vendored copy, or click itself)."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def main() -> None:
    args = expand_set(sys.argv[1:])
    sys.argv[1:] = args
    if args[:1] == ["--version"]:
        from .. import __version__
        print(f"crossdistill {__version__}")
        return
    if args and not {"--help", "-h"} & set(args):   # help stays fast: no diffusers / transformers import
        _quiet_library_bars()
    ce = _click_exceptions()
    try:
        app(standalone_mode=False, prog_name="crossdistill")
    except getattr(ce, "NoArgsIsHelpError", ()) as e:   # a group without a command: its help
        print(e.ctx.get_help())
        sys.exit(2)
    except ce.UsageError as e:   # an unknown option, a missing argument: one line too
        where = e.ctx.command_path if e.ctx is not None else "crossdistill"
        print(f"error: {e.format_message()} (see `{where} --help`)", file=sys.stderr)
        sys.exit(2)
    except ce.ClickException as e:
        print(f"error: {e.format_message()}", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except CrossdistillError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
