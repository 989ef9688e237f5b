#!/usr/bin/env python3
"""PyTorch reference timings for the engine benchmark's workloads (same fields as bench_keras.py).

    <python with torch> Scripts/keras/bench_torch.py unet-train|small-unet-train|classifier-infer \
        [--batch 32] [--steps 5] [--threads 2]

The networks mirror CryLab's (and bench_keras.py's): NHWC in CryLab/Keras, NCHW here, which is
PyTorch's native layout; same layers, widths and FLOPs. Training: MSE + Adam (lr 1e-3, eps 1e-7).
Measured with PyTorch 2.15 (CPU execution) in a virtual environment of its own (torch is a 4 GB wheel): python3 -m venv DIR && DIR/bin/pip install torch.
"""
import torch
from torch import nn

from bench_common import parse_arguments, time_and_report

args = parse_arguments()
if args.policy != "float32":
    raise SystemExit(f"bench_torch.py: --policy {args.policy} is a Keras policy; the PyTorch reference runs fp32 only")
torch.set_num_threads(args.threads)
torch.manual_seed(1)


def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())


class UNet(nn.Module):
    def __init__(self, widths):
        super().__init__()
        depth = len(widths) - 1
        self.down = nn.ModuleList(block(1 if i == 0 else widths[i - 1], widths[i]) for i in range(depth))
        self.bottom = block(widths[depth - 1], widths[depth])
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth))
        self.decode = nn.ModuleList(block(2 * widths[i], widths[i]) for i in range(depth))
        self.out = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x):
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = self.bottom(x)
        for i in reversed(range(len(self.up))):
            x = torch.relu(self.up[i](x))
            x = self.decode[i](torch.cat([x, skips[i]], 1))
        return self.out(x)


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        widths = [32, 64, 128, 256]
        self.blocks = nn.ModuleList(block(1 if i == 0 else widths[i - 1], widths[i]) for i in range(4))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16 * 256, 1024), nn.ReLU(), nn.BatchNorm1d(1024, eps=1e-3),
                                  nn.Dropout(0.25), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 128), nn.ReLU(),
                                  nn.Linear(128, 4), nn.Softmax(1))

    def forward(self, x):
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i < 3:
                x = nn.functional.max_pool2d(x, 2)
        return self.head(x)


def forward_flops(model, x):
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.ConvTranspose2d):
            total += 2 * output.numel() * module.in_channels
        elif isinstance(module, nn.Conv2d):
            total += 2 * output.numel() * module.kernel_size[0] * module.kernel_size[1] * module.in_channels
        elif isinstance(module, nn.Linear):
            total += 2 * output.numel() * module.in_features
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


training = args.workload != "classifier-infer"
size = 64 if args.workload == "small-unet-train" else 128
model = {"unet-train": lambda: UNet([32, 64, 128, 256, 512]),
         "small-unet-train": lambda: UNet([8, 16, 32, 64, 128]),
         "classifier-infer": Classifier}[args.workload]()
x = torch.rand(args.batch, 1, size, size)
flops = forward_flops(model.eval(), x) * (3 if training else 1)
if training:
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)

    def step():
        optimizer.zero_grad(set_to_none=False)
        loss = nn.functional.mse_loss(model(x), x)
        loss.backward()
        optimizer.step()
else:
    model.eval()

    def step():
        with torch.inference_mode():
            model(x)

time_and_report("torch", args, step, flops)
