"""User-facing errors: one line that names the bad value and what is allowed.

The CLI prints `CrossdistillError` messages without a traceback and exits non-zero;
anything else is a bug and keeps its traceback.
"""


class CrossdistillError(Exception):
    """An error caused by the user's input or environment, explained in one line."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """An exception's first message line (cut at `limit`), or its type when it has none:
    what a one-line error quotes of a library's exception."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


def choice_error(what: str, value: object, allowed, renamed: dict | None = None) -> CrossdistillError:
    """`unknown family 'sdx'; allowed: flux, sd15, sd3, sdxl` (closest match suggested;
    `renamed`: old values and their new names, named instead)."""
    import difflib

    allowed = sorted(str(a) for a in allowed)
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    if renamed and value in renamed:
        hint = f" (renamed: now '{renamed[value]}')"
    return CrossdistillError(f"unknown {what} {value!r}{hint}; allowed: {', '.join(allowed)}")


def check_fractions(name: str, bounds) -> tuple[float, float]:
    """A (lo, hi) range of fractions with 0 <= lo < hi <= 1, or a clear error."""
    if len(bounds) != 2 or not 0 <= bounds[0] < bounds[1] <= 1:
        raise CrossdistillError(f"{name} must be two fractions lo < hi in [0, 1], got {list(bounds)}")
    return float(bounds[0]), float(bounds[1])
