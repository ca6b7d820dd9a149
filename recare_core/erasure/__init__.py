"""Erasures as artifacts: weight increments, safetensors files, LoRA compression."""
