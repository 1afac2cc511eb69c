"""Teaching tooling: the notebook runner, the notebook standard, student copies, the paper tables and shared figures.

Nothing in the library imports this package; it drives the notebooks, which call the library.
"""
