"""fa-tui's engine: everything that touches torch (rules, models, optimisers, data, training,
diagnostics). The package itself imports nothing heavy, and the run-directory contract lives in `fa_contract`."""
