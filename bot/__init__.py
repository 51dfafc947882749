"""The Discord layer: commands, buttons, reactions and admin over `generation` and `storage`."""
