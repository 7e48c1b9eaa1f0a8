"""fa-tui's engine: everything that touches torch (rules, models, optimisers, data, training,
diagnostics). The package itself imports nothing heavy, so `engine.config` stays torch-free."""
