"""Reports: leaderboards built from result files (terminal, Markdown, JSON)."""
