"""The deployable worker processes: one per bounded context.

``python -m workers <context>`` starts the Celery worker of one context. It
consumes that context's queues only (its command queue and one queue per event
type it subscribes to, all derived from the registry), so one copy of a
fanned-out event reaches exactly that context's subscribers. Start several
processes of one context, on as many machines as needed, to share its queues.
The relay is its own process: ``python manage.py relay``.
"""
