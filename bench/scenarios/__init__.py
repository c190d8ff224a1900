"""One module per scenario; each has NAME, run(params) and rows(result), or
sections(result) when its result makes several tables."""
