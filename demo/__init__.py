"""Demo data for trying the platform (``manage.py seed_demo``).

Not a bounded context: it owns no tables and composes the contexts' services,
as a shop front would. No context and no part of the platform imports it.
"""
