"""One module per scenario; each has NAME, run(params) and rows(result)."""
