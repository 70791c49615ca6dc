"""Paster template for Pylons 1.0 apps with Beaker sessions as JSON in Tokyo Tyrant."""
