"""Dead letters: messages a consumer gave up on, kept where a person sees them."""

import traceback as traceback_module

from messaging.models import DeadLetter


def dead_letter_record(
    *,
    reason: str,
    context: str,
    body,
    error: BaseException | str,
    consumer: str = "",
    message_id=None,
    message_type: str = "",
    headers: dict | None = None,
    attempts: int = 0,
) -> DeadLetter:
    if isinstance(error, BaseException):
        trace = "".join(traceback_module.format_exception(error))
        error_text = f"{type(error).__name__}: {error}"
    else:
        trace, error_text = "", error
    return DeadLetter.objects.create(
        reason=reason,
        context=context,
        consumer=consumer,
        message_id=message_id,
        message_type=message_type,
        body=body,
        headers=headers or {},
        error=error_text,
        traceback=trace,
        attempts=attempts,
    )
