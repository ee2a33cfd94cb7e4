"""Values made storable in PostgreSQL, for records of what arrived from outside.

A dead letter or a task result keeps what a stranger sent, and PostgreSQL's
text and JSON columns refuse some of it: such a record must still be written,
or the message behind it has nowhere to go.
"""

import math

#: Stands in for a NUL character, which text columns refuse: U+2400 SYMBOL FOR NULL.
NUL_SUBSTITUTE = "\u2400"


def storable(value):
    """``value`` as text or JSON a PostgreSQL column takes: NUL characters as
    U+2400, NaN and infinities (not JSON) as their names, anything else JSON
    cannot hold as its ``str``."""
    if isinstance(value, str):
        return value.replace("\x00", NUL_SUBSTITUTE)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {storable(str(key)): storable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(item) for item in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return storable(str(value))
