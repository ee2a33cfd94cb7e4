"""Ordering: orders and where each stands in the checkout flow."""
