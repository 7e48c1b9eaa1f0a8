"""The TUI's logic as plain functions and small classes: no Textual, no torch.

Everything here can be unit-tested without a terminal: the run-table model (`runtable`),
metric series from events (`series`), downsampling (`downsample`), text renderers for
line charts (`chart`) and heatmap strips (`heatmap`), and the run-directory poller (`store`).
The widgets only place what these functions return on screen.
"""
