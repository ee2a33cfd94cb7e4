"""Flower's configuration file: ``celery -A config flower --conf=platform/config/flowerconfig.py``.

Flower exempts ``/metrics`` from its own login (its docs/auth.rst: "/healthcheck
and /metrics are exempt from authentication"), so anyone who reaches the port
reads every task and worker name and count. Here the metrics page asks for the
same login as every other page (a Prometheus scrape job sends it as
``basic_auth``), and Flower refuses to start without a login at all.
``/healthcheck`` stays open: it answers "OK" and nothing else.

Flower executes this file after reading its command line and ``FLOWER_*``
variables, so the login options are known here.
"""

import tornado.web
from flower.views.monitor import Metrics
from tornado.options import options

if not (options.basic_auth or options.auth):
    raise SystemExit("Flower needs a login: --basic-auth=user:password (or FLOWER_BASIC_AUTH), or OAuth with --auth")

Metrics.get = tornado.web.authenticated(Metrics.get)
