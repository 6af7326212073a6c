"""Efficiency tools above the families: the budget study, int8 optimization and the efficiency leaderboard."""
