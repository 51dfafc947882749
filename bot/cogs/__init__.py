"""One cog per feature: imagine, buttons/reactions, admin, member commands."""
