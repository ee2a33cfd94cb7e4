"""Payment: charging customers for orders."""
