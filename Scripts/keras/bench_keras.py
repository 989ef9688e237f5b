#!/usr/bin/env python3
"""Keras reference timings for the engine benchmark's workloads (Benchmarks/engine/main.swift).

    $(Scripts/python-env.sh tensorflow-cpu keras) Scripts/keras/bench_keras.py unet-train|small-unet-train|classifier-infer \
        [--batch 32] [--steps 5] [--threads 2] [--policy float32|mixed_bfloat16]

Prints one JSON line with the same fields as the Swift benchmark. One workload per process, so
peak RSS (ru_maxrss) belongs to that workload. Ran with TensorFlow-CPU 2.21 / Keras 3.15.
"""
import os

from bench_common import parse_arguments, time_and_report

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

args = parse_arguments()

import numpy as np
import tensorflow as tf

tf.config.threading.set_intra_op_parallelism_threads(args.threads)
tf.config.threading.set_inter_op_parallelism_threads(1)
import keras
from keras import layers

# mixed_bfloat16: every layer computes in bf16 with fp32 variables, Keras's one-line fast mode.
keras.mixed_precision.set_global_policy(args.policy)


def encoder(x, widths, levels, pool_after_last):
    skips = []
    for level in range(levels):
        for _ in range(2):
            x = layers.Conv2D(widths[level], 3, padding="same", activation="relu")(x)
        skips.append(x)
        if level < levels - 1 or pool_after_last:
            x = layers.MaxPooling2D(2)(x)
    return x, skips


def unet(shape, widths):
    inputs = keras.Input(shape)
    depth = len(widths) - 1
    x, skips = encoder(inputs, widths, depth, True)
    for _ in range(2):
        x = layers.Conv2D(widths[depth], 3, padding="same", activation="relu")(x)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(widths[level], 2, strides=2, activation="relu")(x)
        x = layers.Concatenate()([x, skips[level]])
        for _ in range(2):
            x = layers.Conv2D(widths[level], 3, padding="same", activation="relu")(x)
    # The output layer computes in fp32, as Keras's mixed-precision guide has it.
    return keras.Model(inputs, layers.Conv2D(1, 1, dtype="float32")(x))


def classifier():
    inputs = keras.Input((128, 128, 1))
    x, _ = encoder(inputs, [32, 64, 128, 256], 4, False)
    x = layers.Flatten()(x)
    x = layers.Dense(1024, activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.Dense(128, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(4, activation="softmax", dtype="float32")(x))


def forward_flops(model, batch):
    total = 0
    for layer in model.layers:
        out = layer.output.shape
        n = batch * int(np.prod(out[1:]))
        if isinstance(layer, layers.Conv2DTranspose):
            total += 2 * n * layer.input.shape[-1]
        elif isinstance(layer, layers.Conv2D):
            total += 2 * n * layer.kernel_size[0] * layer.kernel_size[1] * layer.input.shape[-1]
        elif isinstance(layer, layers.Dense):
            total += 2 * n * layer.input.shape[-1]
    return total


training = args.workload != "classifier-infer"
if args.workload == "unet-train":
    model = unet((128, 128, 1), [32, 64, 128, 256, 512])
elif args.workload == "small-unet-train":
    model = unet((64, 64, 1), [8, 16, 32, 64, 128])
else:
    model = classifier()
x = np.random.default_rng(1).uniform(0, 1, (args.batch,) + tuple(model.input.shape[1:])).astype(np.float32)
if training:
    model.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    step = lambda: model.train_on_batch(x, x)
else:
    step = lambda: model.predict_on_batch(x)

flops = forward_flops(model, args.batch) * (3 if training else 1)
time_and_report("keras", args, step, flops)  # the first call is the warm-up: tracing, graph building
