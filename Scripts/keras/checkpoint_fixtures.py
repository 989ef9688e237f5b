#!/usr/bin/env python3
"""Keras <-> CryLab checkpoint compatibility: fixtures and the round trip.

Run from the repository root with a Python that has tensorflow-cpu and keras (see
Scripts/python-env.sh):

    PY=$(Scripts/python-env.sh tensorflow-cpu keras h5py)
    $PY Scripts/keras/checkpoint_fixtures.py make
        writes Tests/CryLabCheckpointTests/Fixtures/keras/: Keras-saved files (legacy HDF5, as
        `model.save("x.h5")` writes them) of a small U-Net, its encoder and a classifier built
        exactly as CryLab's builders build them, an input, and Keras's outputs on it.
    $PY Scripts/keras/checkpoint_fixtures.py check FILE.h5 KIND INPUT.f32 OUTPUT.f32
        builds the Keras model of KIND (unet, encoder or classifier), loads the CryLab-written
        FILE.h5 with `model.load_weights`, runs INPUT and compares with CryLab's OUTPUT: prints the
        largest difference and exits 1 above 1e-4 (relative to the output's largest magnitude).
    $PY Scripts/keras/checkpoint_fixtures.py load FILE.h5 INPUT.f32 OUTPUT.f32
        the same with `keras.models.load_model(FILE.h5)`: the model is rebuilt from the file's
        model_config alone, with no code.

    $PY Scripts/keras/checkpoint_fixtures.py encoder-bn
        writes Fixtures/keras/encoder-bn.h5: the encoder `crylab export-encoder` writes for a
        recipe with batch normalisation and dropout (16 mels x 24 frames, widths 4-8), saved by
        Keras's `model.save` with names offset by a layer built first (conv2d_1, ...), so that
        CryLab must match its layers by position; with an input and Keras's outputs on it
        (encoder-bn-input.f32, encoder-bn-output.f32, encoder-bn.json).

The fixtures were produced with TensorFlow-CPU 2.21.0 and Keras 3.15.1 (recorded in
manifest.json and encoder-bn.json).
"""
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import keras
from keras import layers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "Tests", "CryLabCheckpointTests", "Fixtures", "keras")

# The architecture CryLab's tests build too: input 16x16x1, widths 4-8-16 (two levels and a
# bottleneck), 3x3 ReLU convolutions, 2x2 pooling, transposed 2x2 ReLU up-convolutions with skips,
# a linear 1x1 output; the classifier keeps two encoder levels, global average pooling,
# Dense 8 ReLU + BatchNormalization, Dense 3 softmax.
SHAPE = (16, 16, 1)
WIDTHS = [4, 8, 16]


def encoder_levels(x, levels, pool_after_last):
    skips = []
    for level in range(levels):
        for _ in range(2):
            x = layers.Conv2D(WIDTHS[level], 3, padding="same", activation="relu")(x)
        skips.append(x)
        if level < levels - 1 or pool_after_last:
            x = layers.MaxPooling2D(2)(x)
    return x, skips


def build(kind):
    keras.backend.clear_session()  # fresh layer names: conv2d, conv2d_1, ...
    inputs = keras.Input(SHAPE)
    depth = len(WIDTHS) - 1
    if kind == "unet":
        x, skips = encoder_levels(inputs, depth, True)
        for _ in range(2):
            x = layers.Conv2D(WIDTHS[depth], 3, padding="same", activation="relu")(x)
        for level in reversed(range(depth)):
            x = layers.Conv2DTranspose(WIDTHS[level], 2, strides=2, activation="relu")(x)
            x = layers.Concatenate()([x, skips[level]])
            for _ in range(2):
                x = layers.Conv2D(WIDTHS[level], 3, padding="same", activation="relu")(x)
        outputs = layers.Conv2D(1, 1)(x)
    elif kind == "encoder":
        outputs, _ = encoder_levels(inputs, depth, False)
    elif kind == "classifier":
        x, _ = encoder_levels(inputs, depth, False)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dense(8, activation="relu")(x)
        x = layers.BatchNormalization()(x)
        outputs = layers.Dense(3, activation="softmax")(x)
    else:
        raise SystemExit(f"unknown kind {kind}: use unet, encoder or classifier")
    return keras.Model(inputs, outputs)


def randomize(model, rng):
    for layer in model.layers:
        values = [rng.uniform(-0.5, 0.5, size=w.shape).astype(np.float32) for w in layer.get_weights()]
        if isinstance(layer, layers.BatchNormalization):
            values[3] = np.abs(values[3]) + 0.5  # a positive moving variance
        if values:
            layer.set_weights(values)


def make():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261125)
    x = rng.uniform(-1, 1, size=(2,) + SHAPE).astype(np.float32)
    x.astype("<f4").tofile(os.path.join(OUT, "input.f32"))
    manifest = {"tensorflow": __import__("tensorflow").__version__, "keras": keras.__version__,
                "input_shape": list(x.shape), "models": {}}
    for kind in ["unet", "encoder", "classifier"]:
        model = build(kind)
        randomize(model, rng)
        y = model.predict(x, verbose=0)
        model.save(os.path.join(OUT, f"{kind}.h5"))  # legacy HDF5 full-model file
        y.astype("<f4").tofile(os.path.join(OUT, f"{kind}-output.f32"))
        manifest["models"][kind] = {"output_shape": list(y.shape), "layers": [l.name for l in model.layers]}
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print(f"wrote {OUT}")


def check(path, kind, input_path, output_path):
    if kind == "load_model":
        model = keras.models.load_model(path, compile=False)
    else:
        model = build(kind)
        model.load_weights(path)
    x = np.fromfile(input_path, dtype="<f4").reshape((-1,) + tuple(model.input_shape[1:]))
    expected = np.fromfile(output_path, dtype="<f4")
    y = model.predict(x, verbose=0).ravel()
    difference = float(np.max(np.abs(y - expected)) / max(float(np.max(np.abs(expected))), 1e-12))
    print(f"{kind}: Keras {keras.__version__} loaded {path}; largest relative difference {difference:.3g}")
    sys.exit(0 if difference <= 1e-4 else 1)


# The encoder `crylab export-encoder` writes for a recipe with batchNormalization and a
# dropoutRate, on spectrograms of 16 mels x 24 frames: per level two 3x3 'same' convolutions, each
# linear and followed by BatchNormalization and ReLU; 2x2 max pooling and Dropout between levels.
BN_SHAPE = (16, 24, 1)
BN_WIDTHS = [4, 8]


def build_bn_encoder():
    keras.backend.clear_session()
    # Layers made first take the plain names, as in a session that built another model before:
    # the encoder's layers are conv2d_1, batch_normalization_1, re_lu_1, ...
    layers.Conv2D(1, 1), layers.BatchNormalization(), layers.ReLU()
    inputs = keras.Input(BN_SHAPE)
    x = inputs
    for level, width in enumerate(BN_WIDTHS):
        for _ in range(2):
            x = layers.Conv2D(width, 3, padding="same")(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        if level < len(BN_WIDTHS) - 1:
            x = layers.MaxPooling2D(2)(x)
            x = layers.Dropout(0.1)(x)
    return keras.Model(inputs, x)


def make_bn_encoder():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261207)
    x = rng.uniform(-1, 1, size=(2,) + BN_SHAPE).astype(np.float32)
    model = build_bn_encoder()
    randomize(model, rng)
    y = model.predict(x, verbose=0)  # inference: Dropout off, BatchNormalization on moving statistics
    model.save(os.path.join(OUT, "encoder-bn.h5"))
    x.astype("<f4").tofile(os.path.join(OUT, "encoder-bn-input.f32"))
    y.astype("<f4").tofile(os.path.join(OUT, "encoder-bn-output.f32"))
    manifest = {"tensorflow": __import__("tensorflow").__version__, "keras": keras.__version__,
                "input_shape": list(x.shape), "output_shape": list(y.shape),
                "layers": [l.name for l in model.layers]}
    with open(os.path.join(OUT, "encoder-bn.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print(f"wrote {OUT}/encoder-bn.h5: output {y.shape}")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "make":
        make()
    elif len(sys.argv) == 2 and sys.argv[1] == "encoder-bn":
        make_bn_encoder()
    elif len(sys.argv) == 6 and sys.argv[1] == "check":
        check(*sys.argv[2:])
    elif len(sys.argv) == 5 and sys.argv[1] == "load":
        check(sys.argv[2], "load_model", sys.argv[3], sys.argv[4])
    else:
        print(__doc__)
        sys.exit(2)
