"""The shared Sage layer: catalogue, connection (OAuth, token store, HTTP session) and errors.

Imported by both executables; imports nothing Singer-specific.
"""
