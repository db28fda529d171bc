"""Leaderboards built from the results store (planned in issue 5: entry schema, build, render)."""
