"""Serve the line fitted by train.py; inference code written for SageMaker's inference toolkit.

`serve` (Shipyard's toolkit, as AWS's would) loads the model with model_fn and answers each
POST /invocations with predict_fn; the default codecs decode the request (JSON or CSV) and
encode the answer (JSON unless Accept asks for CSV). Standard library only.
"""

import json
import os


def model_fn(model_dir):
    with open(os.path.join(model_dir, "model.json")) as fh:
        return json.load(fh)


def _xs(data):
    """x values from a number, a list of numbers, {"instances": [...]} or CSV rows."""
    if hasattr(data, "tolist"):  # a numpy array, when the image has numpy
        data = data.tolist()
    if isinstance(data, dict):
        data = data.get("instances", [])
    if not isinstance(data, list):
        data = [data]
    return [float(x[0] if isinstance(x, list) else x) for x in data]


def predict_fn(data, model):
    return [model["a"] * x + model["b"] for x in _xs(data)]
