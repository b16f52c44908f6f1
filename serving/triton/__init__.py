"""Triton serving: model names, repository export, embedded server launcher, async client.

`names` is the single source of model and tensor names; `backend` holds the plain
classes the ``model_repository/*/1/model.py`` shims delegate to.
"""
