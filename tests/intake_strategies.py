"""Hypothesis strategies for deliveries a stranger could put on a queue.

Half of them start from a task message as the bus sends it and break a few
headers or the body; the rest are noise. Both the unit test of the intake
check and the property test on a real worker draw from here.
"""

import json
import uuid

from hypothesis import strategies as st

#: A command the ordering worker handles: the near-valid deliveries name it.
TASK = "ordering.PlaceOrder"
#: Headers Celery's worker reads, and some it would act on; the near-valid deliveries set or break these.
CELERY_HEADERS = ["task", "id", "retries", "timelimit", "eta", "expires", "root_id", "parent_id", "group",
                  "group_index", "shadow", "origin", "argsrepr", "kwargsrepr", "ignore_result",
                  "replaced_task_nesting", "stamped_headers", "stamps", "lang", "callbacks", "errbacks",
                  "chain", "chord", "link", "compression"]
#: Task names a stranger might try: other contexts' types, Celery's own tasks, nonsense.
TASK_NAMES = [TASK, "catalog.ReserveStock", "payment.ProcessPayment", "celery.map", "celery.chord",
              "celery.group", "celery.chain", "celery.backend_cleanup", "celery.accumulate"]

_keys = st.text(min_size=1, max_size=12)
#: Text with anything in it, lone surrogates included (py-amqp carries them).
_any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)
_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True) | _any_text
    | st.sampled_from([str(uuid.uuid4()), "2999-01-01T00:00:00", "1999-01-01T00:00:00+00:00",
                       "0001-01-01T00:00:00", "bzip2", "application/x-gzip", *TASK_NAMES])
)
#: Any value an AMQP header table can carry (lists and nested tables included).
header_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                             | st.dictionaries(_keys, inner, max_size=4), max_leaves=8)
#: Any JSON document (with the numbers a JSON encoder writes).
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def task_headers() -> dict:
    """Headers of a valid task message for ``TASK``, with a fresh id."""
    return {"task": TASK, "id": str(uuid.uuid4()), "lang": "py", "retries": 0, "argsrepr": "()",
            "kwargsrepr": "{}", "ignore_result": False, "replaced_task_nesting": 0}


@st.composite
def _broken_task_headers(draw) -> dict:
    headers = task_headers()
    for name in draw(st.lists(st.sampled_from(CELERY_HEADERS), max_size=3, unique=True)):
        if draw(st.booleans()):
            headers[name] = draw(header_values)
        else:
            headers.pop(name, None)
    return headers


_task_bodies = st.one_of(
    st.tuples(_json, _json, _json).map(list),
    st.tuples(st.just([]), st.fixed_dictionaries({"envelope": _json}), st.just({})).map(list),
    st.tuples(st.just([]), st.just({}), st.dictionaries(st.sampled_from(["callbacks", "chain", "chord"]),
                                                         _json, min_size=1)).map(list),
    st.fixed_dictionaries({"task": st.just(TASK), "kwargs": _json}),
    _json,
)


#: AMQP properties Celery copies onto the request.
_properties = st.fixed_dictionaries({}, optional={
    "priority": st.integers(min_value=0, max_value=255),
    "correlation_id": st.text(max_size=40),
    "reply_to": st.text(max_size=40),
    "message_id": st.text(max_size=40),
    "type": st.text(max_size=40),
})


@st.composite
def deliveries(draw) -> tuple[dict, str, str, bytes, dict]:
    """(headers, content type, content encoding, body bytes, properties) of one delivery."""
    headers = draw(_broken_task_headers() | st.dictionaries(_keys, header_values, max_size=5))
    if draw(st.booleans()):
        headers["task"] = draw(st.sampled_from(TASK_NAMES))
    content_type = draw(st.sampled_from(["application/json"] * 4 + ["application/x-python-serialize",
                                                                     "text/plain", "application/x-yaml"])
                        | st.text(min_size=1, max_size=20))
    content_encoding = draw(st.sampled_from(["utf-8"] * 4 + ["binary", "latin-1"]) | st.text(min_size=1, max_size=10))
    body = draw(_task_bodies.map(lambda b: json.dumps(b).encode()) | st.binary(max_size=120))
    return headers, content_type, content_encoding, body, draw(_properties)
