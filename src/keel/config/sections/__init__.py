"""One module per capability's part of keel.yaml: its typed section and the checks that need only it.

The root schema (`keel.config.root`) composes them and runs the checks that span sections.
"""
