"""Ordering's subscribers took the one handler naming pattern (on_<event>); what they handled stays handled.

Here, not in ``messaging``: the names are ordering's, and the platform knows
no bounded context (an import-linter contract). Each context renames its own
handlers, so a context removed or added later carries its own history.
"""

from django.db import migrations
from messaging import RenameHandlers



class Migration(migrations.Migration):

    dependencies = [
        ('ordering', '0002_price_list_entries_plural'),
        ('messaging', '0006_outbox_envelope_search'),
    ]

    operations = [
        RenameHandlers({
            'apps.ordering.handlers.stock_reserved': 'apps.ordering.handlers.on_stock_reserved',
            'apps.ordering.handlers.stock_rejected': 'apps.ordering.handlers.on_stock_rejected',
            'apps.ordering.handlers.payment_succeeded': 'apps.ordering.handlers.on_payment_succeeded',
            'apps.ordering.handlers.payment_failed': 'apps.ordering.handlers.on_payment_failed',
            'apps.ordering.handlers.update_price_list': 'apps.ordering.handlers.on_product_price_changed',
        }),
    ]
