"""The run-directory contract: the config schema and the files a run directory holds, shared by
`engine` (which writes them) and `fa_tui` (which reads them). Torch-free; imports neither."""
