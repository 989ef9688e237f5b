#!/usr/bin/env python3
"""Keras parity fixtures for CryLab's training engine (Tests/CryLabNNTests/Fixtures/keras/).

Run from the repository root:

    $(Scripts/python-env.sh tensorflow-cpu keras) Scripts/keras/make_fixtures.py

Produced with TensorFlow-CPU 2.21.0 and Keras 3.15.1 (the script records the versions it ran with
in the manifest). It writes two files:

    manifest.json   for every tensor: shape and offset (in float32 values) into tensors.bin;
                    plus per-case metadata (layer configuration, Keras layer names, loss values)
    tensors.bin     raw little-endian float32 values, concatenated

Each layer case draws a small random input, random weights, runs the Keras layer under a
GradientTape on the scalar  L = sum(y * r)  for a random r of the output's shape, and stores the
input, weights, r, output y, dL/dinput and dL/dweight. The U-Net case builds a small U-Net exactly as
CryLab's builder does (same layer order, hence the same Keras names), sets random weights, and stores
its MSE loss, gradients and weights after one Adam step (Keras defaults). The Conv2DTranspose cases
with kernel != stride come last, so that adding them left every earlier random draw as it was.
"""
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
import keras
from keras import layers

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "CryLabNNTests", "Fixtures", "keras")
rng = np.random.default_rng(20261125)

tensors = {}
blob = []
offset = 0


def put(name, array):
    global offset
    a = np.asarray(array, dtype="<f4")
    tensors[name] = {"shape": list(a.shape), "offset": offset}
    blob.append(a.ravel().tobytes())
    offset += a.size


def uniform(shape, scale=1.0):
    return rng.uniform(-scale, scale, size=shape).astype(np.float32)


cases = {}


def layer_case(name, layer, inputs, training=True, weights=None, extra=None):
    """Builds `layer` on `inputs`, optionally sets `weights`, records forward and gradients."""
    xs = [tf.constant(x) for x in inputs]
    layer(xs if len(xs) > 1 else xs[0])  # build
    if weights is not None:
        layer.set_weights(weights)
    for i, w in enumerate(layer.weights):
        put(f"{name}/weight/{w.name}", w.numpy())
    with tf.GradientTape(persistent=True) as tape:
        for x in xs:
            tape.watch(x)
        y = layer(xs if len(xs) > 1 else xs[0], training=training)
        r = tf.constant(uniform(y.shape))
        loss = tf.reduce_sum(y * r)
    for i, x in enumerate(inputs):
        put(f"{name}/input/{i}", x)
        put(f"{name}/input_gradient/{i}", tape.gradient(loss, xs[i]).numpy())
    put(f"{name}/r", r.numpy())
    put(f"{name}/output", y.numpy())
    for w in layer.trainable_weights:
        put(f"{name}/weight_gradient/{w.name}", tape.gradient(loss, w).numpy())
    for w in layer.non_trainable_weights:
        put(f"{name}/weight_after/{w.name}", w.numpy())
    cases[name] = {"class": layer.__class__.__name__, "training": training,
                   "weights": [w.name for w in layer.weights], "inputs": len(inputs), **(extra or {})}


def conv_weights(k, cin, cout, transpose=False):
    shape = (k, k, cout, cin) if transpose else (k, k, cin, cout)
    return [uniform(shape, 0.5), uniform((cout,), 0.2)]


def main():
    keras.utils.set_random_seed(1)
    layer_case("conv_same_relu", layers.Conv2D(4, 3, padding="same", activation="relu"),
               [uniform((2, 6, 5, 3))], weights=conv_weights(3, 3, 4),
               extra={"filters": 4, "kernel": 3, "stride": 1, "padding": "same", "activation": "relu"})
    layer_case("conv_stride2_same", layers.Conv2D(5, 3, strides=2, padding="same"),
               [uniform((2, 7, 8, 3))], weights=conv_weights(3, 3, 5),
               extra={"filters": 5, "kernel": 3, "stride": 2, "padding": "same", "activation": "linear"})
    layer_case("conv_valid_5", layers.Conv2D(3, 5, padding="valid"),
               [uniform((2, 9, 7, 2))], weights=conv_weights(5, 2, 3),
               extra={"filters": 3, "kernel": 5, "stride": 1, "padding": "valid", "activation": "linear"})
    layer_case("conv_transpose", layers.Conv2DTranspose(4, 2, strides=2, activation="relu"),
               [uniform((2, 3, 4, 6))], weights=conv_weights(2, 6, 4, transpose=True),
               extra={"filters": 4, "kernel": 2, "activation": "relu"})
    layer_case("max_pooling", layers.MaxPooling2D(2), [uniform((2, 6, 4, 3))])
    layer_case("up_sampling", layers.UpSampling2D(2), [uniform((2, 3, 2, 3))])
    layer_case("concatenate", layers.Concatenate(), [uniform((2, 3, 3, 2)), uniform((2, 3, 3, 4))])
    layer_case("global_average_pooling", layers.GlobalAveragePooling2D(), [uniform((2, 3, 4, 5))])
    layer_case("flatten", layers.Flatten(), [uniform((2, 3, 2, 4))])
    layer_case("leaky_relu", layers.LeakyReLU(), [uniform((2, 3, 3, 2))])
    layer_case("relu", layers.ReLU(), [uniform((2, 3, 3, 2))])
    bn_weights = [uniform((5,), 1) + 1.5, uniform((5,), 0.5), uniform((5,), 0.3), uniform((5,), 0.4) + 1.0]
    layer_case("batch_norm_2d_training", layers.BatchNormalization(), [uniform((3, 4, 4, 5), 2) + 0.5],
               training=True, weights=bn_weights)
    layer_case("batch_norm_1d_inference", layers.BatchNormalization(), [uniform((6, 5), 2)],
               training=False, weights=bn_weights)
    layer_case("dense_relu", layers.Dense(6, activation="relu"), [uniform((4, 7))],
               weights=[uniform((7, 6), 0.5), uniform((6,), 0.2)], extra={"units": 6, "activation": "relu"})
    layer_case("dense_softmax", layers.Dense(4, activation="softmax"), [uniform((5, 7))],
               weights=[uniform((7, 4), 0.5), uniform((4,), 0.2)], extra={"units": 4, "activation": "softmax"})

    # Cross-entropy with label smoothing and class weights, through a softmax Dense.
    dense = layers.Dense(4, activation="softmax")
    x = uniform((6, 7))
    labels = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 1, 2]]
    class_weights = np.array([1.0, 2.0, 0.5, 3.0], dtype=np.float32)
    dense(tf.constant(x))
    dense.set_weights([uniform((7, 4), 0.7), uniform((4,), 0.2)])
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    xt = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        p = dense(xt, training=True)
        loss = loss_fn(labels, p, sample_weight=class_weights[labels.argmax(1)])
    put("cross_entropy/input", x)
    put("cross_entropy/labels", labels)
    put("cross_entropy/class_weights", class_weights)
    put("cross_entropy/kernel", dense.kernel.numpy())
    put("cross_entropy/bias", dense.bias.numpy())
    put("cross_entropy/probabilities", p.numpy())
    put("cross_entropy/input_gradient", tape.gradient(loss, xt).numpy())
    put("cross_entropy/kernel_gradient", tape.gradient(loss, dense.kernel).numpy())
    cases["cross_entropy"] = {"loss": float(loss.numpy()), "label_smoothing": 0.1}

    unet_case()
    transposed_convolution_cases()

    manifest = {
        "generator": "Scripts/keras/make_fixtures.py",
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "layout": "raw little-endian float32 in tensors.bin; offset and shape per tensor, in values",
        "cases": cases,
        "tensors": tensors,
    }
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "tensors.bin"), "wb") as f:
        for b in blob:
            f.write(b)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print(f"wrote {len(tensors)} tensors, {offset * 4} bytes, to {os.path.normpath(OUT)}")


def build_unet(shape, widths, kernel):
    """The same graph, in the same creation order, as CryLab's `Model.uNet` (no BN, no dropout)."""
    keras.backend.clear_session()
    inputs = keras.Input(shape)
    x = inputs
    skips = []
    depth = len(widths) - 1
    for level in range(depth):
        for _ in range(2):
            x = layers.Conv2D(widths[level], kernel, padding="same", activation="relu")(x)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    for _ in range(2):
        x = layers.Conv2D(widths[depth], kernel, padding="same", activation="relu")(x)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(widths[level], 2, strides=2, activation="relu")(x)
        x = layers.Concatenate()([x, skips[level]])
        for _ in range(2):
            x = layers.Conv2D(widths[level], kernel, padding="same", activation="relu")(x)
    outputs = layers.Conv2D(1, 1, activation="linear")(x)
    return keras.Model(inputs, outputs)


def unet_case():
    shape, widths, kernel = (16, 16, 1), [4, 8, 16], 3
    model = build_unet(shape, widths, kernel)
    # Random weights with positive biases so few ReLUs are dead.
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:
            layer.set_weights([uniform(w.shape, 0.4) if w.ndim > 1 else rng.uniform(0.0, 0.1, w.shape).astype(np.float32)
                               for w in ws])
    names = [layer.name for layer in model.layers if layer.weights]
    for layer in model.layers:
        for w in layer.weights:
            put(f"unet/initial/{layer.name}/{w.name}", w.numpy())
    x = rng.uniform(0, 1, (4,) + shape).astype(np.float32)
    target = rng.uniform(0, 1, (4,) + shape).astype(np.float32)
    put("unet/input", x)
    put("unet/target", target)
    with tf.GradientTape() as tape:
        prediction = model(x, training=True)
        loss = tf.reduce_mean(tf.square(prediction - target))
    gradients = tape.gradient(loss, model.trainable_weights)
    put("unet/prediction", prediction.numpy())
    for w, g in zip(model.trainable_weights, gradients):
        put(f"unet/gradient/{w.path}", g.numpy())
    optimizer = keras.optimizers.Adam()  # lr 1e-3, beta1 0.9, beta2 0.999, epsilon 1e-7
    optimizer.apply_gradients(zip(gradients, model.trainable_weights))
    for layer in model.layers:
        for w in layer.weights:
            put(f"unet/after/{layer.name}/{w.name}", w.numpy())
    cases["unet"] = {"input_shape": list(shape), "widths": widths, "kernel": kernel, "loss": float(loss.numpy()),
                     "layers": [layer.name for layer in model.layers[1:]], "weighted_layers": names,
                     "parameters": int(model.count_params())}


def transposed_convolution_cases():
    """Conv2DTranspose with kernel != stride: overlapping patches (k > s), gaps (k < s), and 'same',
    which crops max(k - s, 0) rows/columns of the full output, an odd one at the bottom/right."""
    keras.backend.clear_session()
    for k, s, padding, activation, shape in [(3, 2, "same", "relu", (2, 3, 4, 3)), (3, 2, "valid", "linear", (2, 3, 4, 3)),
                                             (4, 2, "same", "linear", (2, 4, 3, 2)), (3, 1, "same", "linear", (2, 4, 5, 3)),
                                             (5, 3, "valid", "linear", (2, 3, 2, 2)), (5, 2, "same", "linear", (1, 3, 4, 3)),
                                             (2, 3, "same", "linear", (2, 3, 3, 2)), (1, 2, "valid", "linear", (2, 3, 2, 3))]:
        cin, cout = shape[-1], 4
        layer_case(f"conv_transpose_k{k}_s{s}_{padding}",
                   layers.Conv2DTranspose(cout, k, strides=s, padding=padding, activation=activation),
                   [uniform(shape)], weights=conv_weights(k, cin, cout, transpose=True),
                   extra={"filters": cout, "kernel": k, "stride": s, "padding": padding, "activation": activation})


if __name__ == "__main__":
    main()
