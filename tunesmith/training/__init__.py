"""Training recipes and their building blocks."""
