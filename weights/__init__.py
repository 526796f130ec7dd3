"""Checkpoints in and out: reading Hugging Face safetensors in every key layout, writing LLaVA checkpoints,
converting GGUF files, and building the bundled demo and benchmark models."""
