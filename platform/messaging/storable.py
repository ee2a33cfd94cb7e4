"""Values made storable in PostgreSQL, for records of what arrived from outside.

A dead letter or a task result keeps what a stranger sent, and PostgreSQL's
text and JSON columns refuse some of it: such a record must still be written,
or the message behind it has nowhere to go. ``storable`` never raises.
"""

import math

#: Stands in for a NUL character, which text columns refuse: U+2400 SYMBOL FOR NULL.
NUL_SUBSTITUTE = "\u2400"
#: Deeper than this, a value is kept as a note: JSON encoders and PostgreSQL stop
#: somewhere, and no message of the bus nests this deep (BUS_MAX_PAYLOAD_DEPTH).
MAX_DEPTH = 100


def storable(value, *, _depth: int = 0):
    """``value`` as text or JSON a PostgreSQL column takes: NUL characters as
    U+2400, lone surrogates as U+FFFD, NaN and infinities (not JSON) as their
    names, nesting past ``MAX_DEPTH`` as a note, anything else JSON cannot hold
    as its ``str``."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if _depth >= MAX_DEPTH:
        return f"(nested deeper than {MAX_DEPTH} levels: not kept)"
    if isinstance(value, dict):
        return {_text(str(key)): storable(item, _depth=_depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(item, _depth=_depth + 1) for item in value]
    return _text(str(value))


def _text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value.replace("\x00", NUL_SUBSTITUTE)
