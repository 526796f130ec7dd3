"""minilazy: a small Triton inference runtime for multimodal LLMs with Lazy Attention and a Q Cache."""
