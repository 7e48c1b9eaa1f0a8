"""Widgets of the fa-tui app; each draws what a fa_tui.core function computed."""
