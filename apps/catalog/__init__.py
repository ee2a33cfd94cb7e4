"""Catalog: products, their prices and their stock."""
