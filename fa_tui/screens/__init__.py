"""Screens of the fa-tui app: Compose, Runs, Monitor (the app's modes) and the dialogs."""
