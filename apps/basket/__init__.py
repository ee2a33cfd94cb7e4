"""Basket: what a customer is about to buy, at the prices they were shown."""
