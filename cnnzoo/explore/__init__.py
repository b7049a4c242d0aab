"""``cnnzoo explore``: the zoo, each network's layers and stages, predictions with Grad-CAM,
occlusion and feature maps, and the charts of the runs on disk, as a local web app.

``create_app(checkpoints, runs)`` builds the FastAPI application; ``cnnzoo explore`` serves it with
uvicorn on 127.0.0.1. Templates, script and style ship as package data, and Plotly's bundle comes
from its Python package: nothing is fetched from the internet.
"""
from cnnzoo.explore.app import create_app

__all__ = ["create_app"]
