"""The basket's public language.

The basket owns no contracts yet: it sends ``ordering.PlaceOrder`` and
listens to catalog and ordering events.
"""
