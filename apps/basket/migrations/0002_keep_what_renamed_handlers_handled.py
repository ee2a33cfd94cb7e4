"""The basket's subscribers took the one handler naming pattern (on_<event>); what they handled stays handled.

Here, not in ``messaging``: the names are the basket's, and the platform knows
no bounded context (an import-linter contract). Each context renames its own
handlers, so a context removed or added later carries its own history.
"""

from django.db import migrations
from messaging import RenameHandlers



class Migration(migrations.Migration):

    dependencies = [
        ('basket', '0001_initial'),
        ('messaging', '0006_outbox_envelope_search'),
    ]

    operations = [
        RenameHandlers({
            'apps.basket.handlers.reprice_baskets': 'apps.basket.handlers.on_product_price_changed',
            'apps.basket.handlers.empty_basket': 'apps.basket.handlers.on_order_started',
            'apps.basket.handlers.reopen_basket': 'apps.basket.handlers.on_order_cancelled',
        }),
    ]
