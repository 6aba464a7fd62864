"""What training (`offline`) and serving (`stream`) share: contracts, features, models, artifacts.

Dependency direction is `stream -> models <- offline`; this package imports neither.
"""
