"""Base models: what a Hugging Face model folder must hold, staging one from storage into a cache keyed
by its content, the Hub (for presets that name one), and how much GPU memory training it takes.
"""
