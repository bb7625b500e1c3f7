"""User-facing errors: one line that names the bad value and what is allowed.

The CLI prints `CrossdistillError` messages without a traceback and exits non-zero;
anything else is a bug and keeps its traceback.
"""


class CrossdistillError(Exception):
    """An error caused by the user's input or environment, explained in one line."""


def choice_error(what: str, value: object, allowed) -> CrossdistillError:
    """`unknown family 'sdx'; allowed: flux, sd15, sd3, sdxl` (closest match suggested)."""
    import difflib

    allowed = sorted(str(a) for a in allowed)
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return CrossdistillError(f"unknown {what} {value!r}{hint}; allowed: {', '.join(allowed)}")
