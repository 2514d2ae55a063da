"""Train the sample model: a scaled logistic regression on scikit-learn's bundled breast-cancer data.

Usage: ``python -m app.train OUT_DIR [--seed N]`` writes ``OUT_DIR/model.skops`` (skops format, loaded
without executing code) and ``OUT_DIR/model.json`` (metrics, input schema, golden set). Publishing
(``aiship model publish OUT_DIR --name NAME``) adds the store's fields and turns it into manifest.json.
"""

from __future__ import annotations

import argparse
import json
import platform
from importlib.metadata import version
from pathlib import Path

import skops.io as sio
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

MODEL_FILE = "model.skops"
METADATA_FILE = "model.json"
GOLDEN_SIZE = 32


def build_model(seed: int) -> Pipeline:
    """The estimator: every type in it is on app.model.ALLOWED_TYPES."""
    return Pipeline([
        ("scale", StandardScaler()),
        ("clf", LogisticRegression(max_iter=1000, random_state=seed)),
    ])


def train(out_dir: Path, *, seed: int = 0, flip_labels: bool = False) -> Path:
    """Train, evaluate on a held-out split and write model.skops + model.json into out_dir.

    ``flip_labels`` trains on inverted labels; only the known-bad fixtures use it.
    """
    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.25, random_state=seed, stratify=data.target)
    model = build_model(seed).fit(x_train, 1 - y_train if flip_labels else y_train)
    predicted = model.predict(x_test)
    golden_inputs = x_test[:GOLDEN_SIZE]
    metadata = {
        "schema_version": 1,
        "framework": "scikit-learn",
        "library_versions": {
            "python": platform.python_version(),
            "scikit-learn": version("scikit-learn"),
            "skops": version("skops"),
            "numpy": version("numpy"),
        },
        "task": "classification",
        "training": {"dataset": "sklearn.datasets.load_breast_cancer", "seed": seed,
                     "train_rows": len(x_train), "test_rows": len(x_test)},
        "metrics": {
            "accuracy": round(float(accuracy_score(y_test, predicted)), 6),
            "f1": round(float(f1_score(y_test, predicted)), 6),
        },
        "input_schema": {"n_features": int(data.data.shape[1]),
                         "feature_names": [str(n) for n in data.feature_names]},
        "output": {"kind": "class_label", "classes": [int(c) for c in model.classes_]},
        "golden_set": {
            "rule": "exact",
            "tolerance": 0.0,
            "inputs": golden_inputs.tolist(),
            "expected": [int(v) for v in model.predict(golden_inputs)],
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    sio.dump(model, out_dir / MODEL_FILE)
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m app.train", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write model.skops and model.json into")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the split and the model")
    args = parser.parse_args(argv)
    out = train(args.out_dir, seed=args.seed)
    metrics = json.loads((out / METADATA_FILE).read_text())["metrics"]
    print(f"wrote {out / MODEL_FILE} and {out / METADATA_FILE}: accuracy {metrics['accuracy']:.4f}, "
          f"f1 {metrics['f1']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
