"""`python -m fa_tui` is `fa-tui`."""
from fa_tui.cli import main

main()
