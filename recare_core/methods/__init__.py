"""Erasure methods: each module takes a backend, its inputs and its config and returns increments.

Importing the package registers every built-in method with :mod:`recare_core.methods.registry`."""

from . import esd, recare, uce  # noqa: F401  (registration)
