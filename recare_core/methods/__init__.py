"""Erasure methods: each module takes a backend, its inputs and its config and returns increments."""
