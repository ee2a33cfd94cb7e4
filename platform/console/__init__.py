"""The operator console: the admin's pages over the bus's tables.

An app on top of ``messaging``, as ``django.contrib.admin`` sits on models that
know nothing of it: the bus's tables read as people read them, dead letters
repaired (retried to their one consumer, or discarded with a note), each
conversation's timeline and sequence diagram, the topology and the overview
pages, and ``manage.py run_platform``. The bus never imports it; a project
without it (``console`` out of ``INSTALLED_APPS``) runs the same bus.
"""
