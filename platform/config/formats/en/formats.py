"""Date and time formats for English, over Django's own: times to the second.

Operators compare the admin's times with logs and with each other (a retry a few
seconds after a failure), so every date-time shows its seconds, in lists and on
detail pages alike. Formats not named here are Django's.
https://docs.djangoproject.com/en/5.2/ref/templates/builtins/#date
"""

DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
