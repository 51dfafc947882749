"""The slash commands and the handlers of clicks and reactions, one module per feature."""
