"""Baselines trained with the same loop, configs and checkpoints as the diffusion models."""
