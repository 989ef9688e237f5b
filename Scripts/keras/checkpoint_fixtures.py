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
    $PY Scripts/keras/checkpoint_fixtures.py hostile
        writes Tests/CryLabCheckpointTests/Fixtures/hostile/ with h5py alone, from the committed
        keras/encoder.h5 and keras/encoder-bn-input.f32: files with variable-length strings
        where h5py puts them by default (attributes and datasets), variable-length strings or
        empty values where numbers are expected, and a variable-length integer sequence where
        strings are expected. CryLab must read each correctly or reject it naming the file and
        the key; manifest.json says which.

The fixtures were produced with TensorFlow-CPU 2.21.0 and Keras 3.15.1 (recorded in
manifest.json and encoder-bn.json); the hostile files with h5py (recorded in their manifest).
"""
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

try:
    import keras
    from keras import layers
except ImportError:  # `hostile` needs h5py alone
    keras = layers = None

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


HOSTILE = os.path.join(HERE, "..", "..", "Tests", "CryLabCheckpointTests", "Fixtures", "hostile")


def make_hostile():
    """Small files with what h5py writes by default (variable-length strings) and values of the
    wrong kind. Keys are HDF5 paths; "read" files must load, "rejected" ones must fail naming the key."""
    import shutil
    import h5py

    os.makedirs(HOSTILE, exist_ok=True)
    encoder = os.path.join(OUT, "encoder.h5")
    str_type = h5py.string_dtype("utf-8")  # variable length: h5py's default for a Python str

    def copy_of(name):
        path = os.path.join(HOSTILE, name)
        shutil.copyfile(encoder, path)
        return path

    manifest = {"h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version, "files": {}}
    model_name, clip_paths = "encodeur-\u00e9t\u00e9", ["b\u00e9b\u00e9/cry-1.wav", "cry-2.wav"]

    # Every string a variable-length UTF-8 str, model_config with a non-ASCII model name.
    path = copy_of("keras-vlen-strings.h5")
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        config["config"]["name"] = model_name
        for key, value in [("model_config", json.dumps(config, ensure_ascii=False)), ("keras_version", "3.15.1"), ("backend", "tensorflow")]:
            del f.attrs[key]
            f.attrs[key] = value  # a Python str: h5py writes variable-length UTF-8
        weights = f["model_weights"]
        names = [n.decode() if isinstance(n, bytes) else n for n in weights.attrs["layer_names"]]
        del weights.attrs["layer_names"]
        weights.attrs.create("layer_names", np.array(names, dtype=object), dtype=str_type)
    manifest["files"]["keras-vlen-strings.h5"] = {"expect": "read", "model_name": model_name}

    # A weight stored as variable-length strings.
    path = copy_of("keras-vlen-weight.h5")
    with h5py.File(path, "r+") as f:
        del f["model_weights/conv2d_2/conv2d_2/kernel"]
        f.create_dataset("model_weights/conv2d_2/conv2d_2/kernel", data=np.array(["0.1", "0.2", "0.3"], dtype=object), dtype=str_type)
    manifest["files"]["keras-vlen-weight.h5"] = {"expect": "rejected", "key": "/model_weights/conv2d_2/conv2d_2/kernel"}

    # layer_names as a variable-length sequence of integers.
    path = copy_of("keras-vlen-integers.h5")
    with h5py.File(path, "r+") as f:
        weights = f["model_weights"]
        del weights.attrs["layer_names"]
        values = np.empty(2, dtype=object)
        values[0], values[1] = np.array([1, 2], dtype=np.int32), np.array([3], dtype=np.int32)
        weights.attrs.create("layer_names", values, dtype=h5py.vlen_dtype(np.int32))
    manifest["files"]["keras-vlen-integers.h5"] = {"expect": "rejected", "key": "/model_weights@layer_names"}

    # A CryLab checkpoint whose format_version is the string "1".
    path = copy_of("checkpoint-vlen-version.h5")
    with h5py.File(path, "r+") as f:
        group = f.create_group("crylab")
        group.attrs["format"] = "crylab-checkpoint"
        group.attrs["format_version"] = "1"
    manifest["files"]["checkpoint-vlen-version.h5"] = {"expect": "rejected", "key": "crylab/@format_version"}

    # A feature store as h5py writes it by default: path, group, class names and front end as
    # variable-length strings; its clips are the input of encoder-bn.h5.
    clips = np.fromfile(os.path.join(OUT, "encoder-bn-input.f32"), dtype="<f4").reshape(2, 16, 24)

    def store(name, **overrides):
        with h5py.File(os.path.join(HOSTILE, name), "w") as f:
            f["features"] = clips
            f["label"] = np.array([0, 1], dtype=np.int32)
            f.create_dataset("path", data=np.array(clip_paths, dtype=object), dtype=str_type)
            f.create_dataset("group", data=np.array(["family-a", "family-b"], dtype=object), dtype=str_type)
            f["duration"] = np.array([5.0, 5.0])
            f["source_rate"] = np.array([8000, 8000], dtype=np.int32)
            f.attrs["format"] = "crylab-features"
            f.attrs["format_version"] = np.int64(1)
            f.attrs.create("class_names", np.array(["hungry", "tired"], dtype=object), dtype=str_type)
            f.attrs["front_end"] = json.dumps({"sampleRate": 8000, "nFFT": 512, "hopLength": 128, "nMels": 16, "frames": 24})
            f.attrs["norm_mean"] = 0.0
            f.attrs["norm_std"] = 1.0
            for key, value in overrides.items():
                del f.attrs[key]
                f.attrs[key] = value

    store("store-vlen.h5")
    manifest["files"]["store-vlen.h5"] = {"expect": "read", "paths": clip_paths}
    store("store-vlen-number.h5", norm_std="1.0")
    manifest["files"]["store-vlen-number.h5"] = {"expect": "rejected", "key": "/@norm_std"}
    store("store-empty-number.h5", norm_mean=h5py.Empty("<f8"))
    manifest["files"]["store-empty-number.h5"] = {"expect": "rejected", "key": "/@norm_mean"}

    with open(os.path.join(HOSTILE, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print(f"wrote {HOSTILE}")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "make":
        make()
    elif len(sys.argv) == 2 and sys.argv[1] == "encoder-bn":
        make_bn_encoder()
    elif len(sys.argv) == 2 and sys.argv[1] == "hostile":
        make_hostile()
    elif len(sys.argv) == 6 and sys.argv[1] == "check":
        check(*sys.argv[2:])
    elif len(sys.argv) == 5 and sys.argv[1] == "load":
        check(sys.argv[2], "load_model", sys.argv[3], sys.argv[4])
    else:
        print(__doc__)
        sys.exit(2)
