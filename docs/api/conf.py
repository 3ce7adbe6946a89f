"""Sphinx configuration of the API reference (``python -m sphinx -W -b html docs/api build/api``)."""

project = "pt_kfgn"
extensions = ["sphinx.ext.autodoc", "numpydoc"]
numpydoc_show_class_members = False
numpydoc_validation_checks = set()
autodoc_member_order = "bysource"
autodoc_typehints = "none"
html_theme = "alabaster"
exclude_patterns = []
