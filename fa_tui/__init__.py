"""fa-tui: a terminal workbench for biologically plausible learning rules.

`fa_tui.cli` is the command line, `fa_tui.app` the Textual workbench, `fa_tui.launch` starts and
stops worker processes, `fa_tui.export` writes tables and plots. Nothing under fa_tui imports
torch: training runs in separate worker processes (engine/worker.py).
"""
