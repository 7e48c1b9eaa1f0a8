"""Backpropagation: the feedback is the forward weight itself (exact transpose)."""
from engine.rules.base import Rule


class BP(Rule):
    name = "bp"
    exact_rule = True
    has_feedback = False
