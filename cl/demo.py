"""`python -m cl.demo`: the paper's 2-D feature experiment on sklearn's digits.

Wen et al. (ECCV 2016, Fig. 3) train a network whose penultimate layer has
two units, with softmax alone and with softmax + lambda * center loss, and plot
those 2-D features. Softmax alone separates the classes by angle (radial
fans); center loss pulls each class onto its center. This script does the
same on the 8x8 digits that ship with scikit-learn, through Keras `fit` in
graph mode, and measures it on a held-out test split:

  intra_class_distance  mean ||x_i - c_{y_i}|| over the test features
  inter_center_distance mean distance between two class centers
  ratio                 intra / inter (scale-free: lower = tighter clusters)

The centers are cl's learned centers for lambda > 0; softmax alone has none,
so there they are the class means of the training features.

Writes OUT/features.png (one panel per lambda) and OUT/metrics.csv.

`--keras 3` trains the same models with Keras 3 and the `cl.keras3.CenterLoss`
layer instead (backend from KERAS_BACKEND: tensorflow, jax or torch).
"""

import argparse
import csv
import os
import time
import warnings

import numpy as np

import cl

ALPHA = 0.5  # the paper's center learning rate
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
TEST_FRACTION = 0.3
CSV_COLUMNS = ["lambda", "test_accuracy", "intra_class_distance",
               "inter_center_distance", "ratio"]


def positive_floats(text):
    values = [float(value) for value in text.split(",")]
    if any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(
            f"must be positive, received {text!r} (lambda 0 always runs first)")
    return values


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m cl.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/demo", help="output folder")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lambdas", type=positive_floats, default=[0.001, 0.01, 0.1],
                        help="comma-separated center loss weights (default "
                             "0.001,0.01,0.1); softmax alone always runs first")
    parser.add_argument("--data", help="a .npz with arrays x [n, ...] and y (int "
                                       "labels) to use instead of the digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keras", choices=["2", "3"], default="2",
                        help="2: graph-mode Keras 2 and cl's losses (default); 3: Keras 3 "
                             "and the cl.keras3.CenterLoss layer (KERAS_BACKEND decides)")
    return parser.parse_args(argv)


def load_data(path, seed):
    """Stratified train/test split of the digits, or of `path`'s x and y.

    x is flattened and scaled to [0, 1] by its global min and max (the digits'
    pixels run 0..16); labels become 0..k-1, `class_names` keeps the originals.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if path:
        with np.load(path) as arrays:
            x, y = arrays["x"], arrays["y"]
    else:
        x, y = load_digits(return_X_y=True)
    x = x.reshape(len(x), -1).astype(np.float32)
    x = (x - x.min()) / max(x.max() - x.min(), 1e-12)
    class_names, y = np.unique(y, return_inverse=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=seed)
    return x_train, x_test, y_train, y_test, class_names


def build_model(keras, input_dim, num_classes):
    """An MLP with a 2-D feature layer, then bias-free logits.

    Without a bias each logit is <w_j, x>, so softmax alone separates classes
    by angle and the features fan out radially, as in the paper's figure.
    Three hidden layers: with two, softmax alone gave blobs more than fans.
    """
    inputs = keras.Input((input_dim,))
    hidden = inputs
    for units in (256, 256, 128):
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
    embedding = keras.layers.Dense(2, name="embedding")(hidden)
    logits = keras.layers.Dense(num_classes, use_bias=False, name="logits")(embedding)
    return inputs, logits, embedding


def train(keras, lambda_, data, epochs, seed):
    """Trains one model; returns its test accuracy, features and centers."""
    x_train, x_test, y_train, y_test, class_names = data
    num_classes = len(class_names)
    # A fresh graph per run, seeded, so each run starts from the same state.
    # set_random_seed seeds Python's random too: Keras draws unseeded
    # initializers' seeds from it, and fit shuffles with numpy.
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    inputs, logits, embedding = build_model(keras, x_train.shape[1], num_classes)
    optimizer = keras.optimizers.legacy.Adam(learning_rate=LEARNING_RATE)
    # 'accuracy' would pick categorical accuracy for a custom loss: name it.
    metrics = ["sparse_categorical_accuracy"]
    if lambda_ == 0:
        model = keras.Model(inputs, logits)
        model.compile(optimizer, loss=cl.SparseSoftmaxLoss(), metrics=metrics)
        targets = y_train
    else:
        model = keras.Model(inputs, [logits, embedding])
        center = cl.CenterLoss(num_classes=num_classes, alpha=ALPHA)
        cl.compile_model(
            model, optimizer,
            loss={"logits": cl.SparseSoftmaxLoss(), "embedding": center},
            loss_weights={"logits": 1.0, "embedding": lambda_},
            metrics={"logits": metrics, "embedding": cl.center_metrics(center)})
        targets = {"logits": y_train, "embedding": y_train}
    model.fit(x_train, targets, batch_size=BATCH_SIZE, epochs=epochs, verbose=2)

    test_logits, test_features = keras.Model(inputs, [logits, embedding]).predict(x_test)
    return run_result(lambda_, test_logits, test_features, y_test,
                      lambda: keras.Model(inputs, embedding).predict(x_train), y_train,
                      None if lambda_ == 0 else keras.backend.get_value(center.centers), num_classes)


def run_result(lambda_, test_logits, test_features, y_test, train_features, y_train, centers,
               num_classes):
    """One run's row and plot data. Softmax alone (λ = 0) has no centers: the
    class means of its training features (`train_features()`) stand in."""
    if centers is None:
        features = train_features()
        centers = np.stack([features[y_train == j].mean(axis=0)
                            for j in range(num_classes)])
    accuracy = float(np.mean(test_logits.argmax(axis=1) == y_test))
    return dict(lambda_=lambda_, accuracy=accuracy,
                features=test_features, centers=centers,
                **measure(test_features, y_test, centers))


def train_keras3(keras, lambda_, data, epochs, seed):
    """`train` with Keras 3: the cl.keras3 layer on the embedding, labels as an
    input; the deployed model skips it. Same model, optimizer and outputs."""
    from cl.keras3 import CenterLoss

    x_train, x_test, y_train, y_test, class_names = data
    num_classes = len(class_names)
    keras.utils.set_random_seed(seed)
    inputs, logits, embedding = build_model(keras, x_train.shape[1], num_classes)
    labels = keras.Input((), dtype="int32")
    center = CenterLoss(num_classes, alpha=ALPHA, weight=lambda_)
    head = keras.Model(inputs, logits).get_layer("logits")
    model = keras.Model([inputs, labels], head(center([embedding, labels])))
    model.compile(keras.optimizers.Adam(learning_rate=LEARNING_RATE),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["sparse_categorical_accuracy"])
    model.fit([x_train, y_train], y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=2)

    test_logits, test_features = keras.Model(inputs, [logits, embedding]).predict(x_test, verbose=0)
    return run_result(lambda_, test_logits, test_features, y_test,
                      lambda: keras.Model(inputs, embedding).predict(x_train, verbose=0), y_train,
                      None if lambda_ == 0 else keras.ops.convert_to_numpy(center.centers),
                      num_classes)


def measure(features, labels, centers):
    """Intra-class distance to the centers, inter-center distance, their ratio."""
    intra = float(np.mean(np.linalg.norm(features - centers[labels], axis=1)))
    gaps = np.linalg.norm(centers[:, None, :] - centers[None, :, :], axis=-1)
    inter = float(gaps[np.triu_indices(len(centers), k=1)].mean())
    return dict(intra=intra, inter=inter, ratio=intra / inter)


def plot(results, y_test, class_names, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(class_names)
    colors = (plt.get_cmap("tab10")(np.arange(count)) if count <= 10
              else plt.get_cmap("turbo")(np.linspace(0, 1, count)))
    figure, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.6),
                                squeeze=False)
    for axis, result in zip(axes[0], results):
        features, centers = result["features"], result["centers"]
        for j, name in enumerate(class_names):
            members = features[y_test == j]
            axis.scatter(members[:, 0], members[:, 1], s=6, color=colors[j],
                         alpha=0.7, label=str(name))
        axis.scatter(centers[:, 0], centers[:, 1], marker="x", s=60, color="black",
                     linewidths=2)
        for name, center in zip(class_names, centers):
            axis.annotate(str(name), center, xytext=(4, 4), textcoords="offset points",
                          fontsize=9, fontweight="bold")
        if result["lambda_"] == 0:
            title = "softmax alone (λ = 0)\nX = class means of train features"
        else:
            title = f"softmax + center loss, λ = {result['lambda_']:g}\nX = learned centers"
        axis.set_title(f"{title}\ntest acc {result['accuracy']:.3f}, "
                       f"ratio {result['ratio']:.3f}", fontsize=10)
        axis.set_aspect("equal", adjustable="datalim")
        axis.tick_params(labelsize=8)
    axes[0][-1].legend(title="class", markerscale=2, fontsize=8, loc="center left",
                       bbox_to_anchor=(1.02, 0.5))
    figure.suptitle("2-D test-split features (Wen et al. 2016, Fig. 3)")
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def table_rows(results):
    """The CSV_COLUMNS values of each run, as text."""
    return [[f"{result['lambda_']:g}", f"{result['accuracy']:.4f}", f"{result['intra']:.4f}",
             f"{result['inter']:.4f}", f"{result['ratio']:.4f}"] for result in results]


def write_csv(results, path):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(table_rows(results))


def main(argv=None):
    args = parse_args(argv)
    if args.keras == "3":
        import keras
        trainer, framework = train_keras3, f"Keras {keras.__version__} on {keras.backend.backend()}"
    else:
        import tensorflow as tf

        from cl import compat
        # cl's ops are TF1 graph ops: no eager execution.
        tf.compat.v1.disable_eager_execution()
        # Keras 2's graph-mode predict warns about its own internals on every call.
        warnings.filterwarnings("ignore", message="`Model.state_updates`")
        keras = compat.keras_module()
        trainer, framework = train, f"TensorFlow {tf.__version__}"
    data = load_data(args.data, args.seed)
    os.makedirs(args.out, exist_ok=True)

    start = time.time()
    results = []
    for lambda_ in [0.0] + args.lambdas:
        print(f"== lambda {lambda_:g}: "
              f"{'softmax alone' if lambda_ == 0 else 'softmax + center loss'}")
        results.append(trainer(keras, lambda_, data, args.epochs, args.seed))

    figure_path = os.path.join(args.out, "features.png")
    csv_path = os.path.join(args.out, "metrics.csv")
    plot(results, data[3], data[4], figure_path)
    write_csv(results, csv_path)

    print()
    for row in [CSV_COLUMNS] + table_rows(results):
        print("  ".join(value.rjust(len(name)) for value, name in zip(row, CSV_COLUMNS)))
    print(f"\nwrote {figure_path}\nwrote {csv_path}\n"
          f"({time.time() - start:.0f} s, {framework})")


if __name__ == "__main__":
    main()
