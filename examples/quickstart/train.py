"""Fit y = a*x + b by gradient descent; a training script written for SageMaker's toolkit.

It uses the SM_* environment and command-line hyperparameters, exactly as a script run by
AWS's sagemaker-training-toolkit would, and needs nothing beyond the standard library.
"""

import argparse
import csv
import json
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    args = parser.parse_args()

    rows = []
    for path in sorted(Path(os.environ["SM_CHANNEL_TRAINING"]).glob("*.csv")):
        with open(path) as fh:
            rows.extend((float(x), float(y)) for x, y in csv.reader(fh))
    a = b = 0.0
    for epoch in range(args.epochs):
        grad_a = sum((a * x + b - y) * x for x, y in rows) / len(rows)
        grad_b = sum((a * x + b - y) for x, y in rows) / len(rows)
        a -= args.learning_rate * grad_a
        b -= args.learning_rate * grad_b
        if epoch % 20 == 0 or epoch == args.epochs - 1:
            loss = sum((a * x + b - y) ** 2 for x, y in rows) / len(rows)
            print(f"epoch={epoch} loss={loss:.6f}")
    Path(os.environ["SM_MODEL_DIR"], "model.json").write_text(json.dumps({"a": a, "b": b}))
    print(f"model: y = {a:.3f} * x + {b:.3f}")


if __name__ == "__main__":
    main()
