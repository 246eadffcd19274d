"""LLM recommender pieces: pretrained-weight resolution, semantic-ID tokens, tasks and prompts."""
