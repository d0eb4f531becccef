"""Train the small Fashion-MNIST residual CNN that ships as ``models/fmnist_resnet.onnx``.

Data: the real Fashion-MNIST set (60k train / 10k test) from Debian's ``dataset-fashion-mnist``
package (``apt-get install dataset-fashion-mnist`` -> ``/usr/share/datasets/fashion-mnist/*.gz``,
the original IDX files). Nothing is downloaded.

Preprocessing (the ONNX model does NOT contain it; its input is the normalized tensor):

    x = (pixels / 255 - 0.2860) / 0.3530        # float32, NCHW [N, 1, 28, 28]

Architecture (~77k params, ~7 M MACs per image), chosen so that every structure the pruner has to
reason about shows up at least once: conv stem + BatchNorm, a two-branch channel Concat, two
residual blocks (BN, residual Add), a strided transition conv, GlobalAveragePool and a Linear head.

    stem   Conv3x3(1->24) BN ReLU                                   28x28
    split  [Conv3x3/s2(24->16) BN ReLU] || [MaxPool2 Conv1x1(24->16) BN ReLU] -> Concat 32ch  14x14
    res1   Conv3x3 BN ReLU Conv3x3 BN  + identity, ReLU  (32ch)      14x14
    down   Conv3x3/s2(32->48) BN ReLU                                  7x7
    res2   Conv3x3 BN ReLU Conv3x3 BN  + identity, ReLU  (48ch)        7x7
    head   GlobalAveragePool Flatten Linear(48->10)

Outputs (all written next to this script unless --out-dir is given):
    fmnist_resnet.onnx   opset 17, input "input" [N,1,28,28] float32, output "logits" [N,10];
                         BatchNormalization nodes are kept in the graph (onnxprune folds them).
    fmnist_calib.npz     "input" float32 [512,1,28,28] (normalized) + "labels" int64 [512]:
                         the first 512 of a fixed-seed permutation of the 60k training images.
    fmnist_eval.npz      the full 10k test set: "input" float32 [10000,1,28,28] (normalized) and
                         "labels" int64 -- or, if that would exceed 12 MB compressed, "pixels"
                         uint8 [10000,1,28,28] + "labels" (convert with the formula above).

Usage:  python models/train_fmnist.py [--epochs 12] [--seed 0] [--out-dir models]
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import sys
import time
import warnings
from pathlib import Path

import numpy as np

MEAN, STD = 0.2860, 0.3530
DATA_DIR = Path(os.environ.get("FMNIST_DIR", "/usr/share/datasets/fashion-mnist"))
CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
EVAL_FLOAT_LIMIT = 12 * 1024 * 1024


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file (the original MNIST/Fashion-MNIST format)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims)


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    img = DATA_DIR / f"{prefix}-images-idx3-ubyte.gz"
    lab = DATA_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not img.exists():
        sys.exit(f"Fashion-MNIST not found at {DATA_DIR}: apt-get install dataset-fashion-mnist")
    x = read_idx(img)[:, None, :, :]  # uint8 [N,1,28,28]
    y = read_idx(lab).astype(np.int64)
    return x, y


def normalize(pixels: np.ndarray) -> np.ndarray:
    return ((pixels.astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32)


def build_model():
    import torch
    from torch import nn

    def cbr(cin, cout, k, s=1):
        return nn.Sequential(
            nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        )

    class ResBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu(y + x)

    class FMNISTResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = cbr(1, 24, 3)
            self.branch_conv = cbr(24, 16, 3, 2)
            self.branch_pool = nn.Sequential(nn.MaxPool2d(2), cbr(24, 16, 1))
            self.res1 = ResBlock(32)
            self.down = cbr(32, 48, 3, 2)
            self.res2 = ResBlock(48)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(48, 10)

        def forward(self, x):
            x = self.stem(x)
            x = torch.cat([self.branch_conv(x), self.branch_pool(x)], dim=1)
            x = self.res1(x)
            x = self.down(x)
            x = self.res2(x)
            x = torch.flatten(self.pool(x), 1)
            return self.fc(x)

    return FMNISTResNet()


def count_macs(model) -> int:
    """Conv/Linear multiply-accumulates for one 1x28x28 image (hooks, no extra deps)."""
    import torch
    from torch import nn

    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += out.numel() * k
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    model.train(was_training)
    for h in hs:
        h.remove()
    return total


def augment(xb, gen):
    """Random 2-pixel shift (pad+crop) and horizontal flip, per sample, seeded."""
    import torch

    n = xb.shape[0]
    pad = torch.nn.functional.pad(xb, (2, 2, 2, 2), value=float((0 - MEAN) / STD))
    dx = torch.randint(0, 5, (n,), generator=gen)
    dy = torch.randint(0, 5, (n,), generator=gen)
    rows = dy[:, None] + torch.arange(28)[None, :]  # [n,28]
    cols = dx[:, None] + torch.arange(28)[None, :]
    out = pad[:, 0][torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]  # [n,28,28]
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.where(flip[:, None, None], out.flip(-1), out)
    return out[:, None]


def evaluate(model, x, y, bs=1000) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), bs):
            correct += (model(x[i : i + bs]).argmax(1) == y[i : i + bs]).sum().item()
    return correct / len(x)


def export_onnx(model, path: Path) -> None:
    import onnx
    import torch

    model.eval()
    dummy = torch.zeros(2, 1, 28, 28)
    kwargs = dict(
        input_names=["input"],
        output_names=["logits"],
        opset_version=17,
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        dynamo=False,
    )
    # TrainingMode.EVAL + constant folding fuses BN into the convs; PRESERVE keeps the
    # BatchNormalization nodes (the model is in eval mode, so they are inference-mode BN).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation + PRESERVE/folding notice
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            do_constant_folding=True,
            training=torch.onnx.TrainingMode.PRESERVE,
            **kwargs,
        )
    m = onnx.load(str(path))
    n_bn = sum(n.op_type == "BatchNormalization" for n in m.graph.node)
    if n_bn == 0:
        torch.onnx.export(model, (dummy,), str(path), do_constant_folding=False, **kwargs)
        m = onnx.load(str(path))
        n_bn = sum(n.op_type == "BatchNormalization" for n in m.graph.node)
    if n_bn == 0:
        raise RuntimeError("exported graph has no BatchNormalization nodes")
    for n in m.graph.node:
        if n.op_type == "BatchNormalization":
            modes = [a.i for a in n.attribute if a.name == "training_mode"]
            if any(modes) or len(n.output) != 1:
                raise RuntimeError(f"BN node {n.name} exported in training mode")
    m.doc_string = (
        "Fashion-MNIST residual CNN (onnxprune models/train_fmnist.py). Input: "
        "(pixels/255 - 0.2860)/0.3530, NCHW float32 [N,1,28,28]; output logits [N,10]. "
        "Classes: " + ", ".join(CLASSES)
    )
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort
    import torch

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    xtr_u8, ytr = load_split("train")
    xte_u8, yte = load_split("test")
    print(f"train {xtr_u8.shape} test {xte_u8.shape} from {DATA_DIR}")
    xtr, xte = torch.from_numpy(normalize(xtr_u8)), torch.from_numpy(normalize(xte_u8))
    ytr_t, yte_t = torch.from_numpy(ytr), torch.from_numpy(yte)

    model = build_model()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params}  MACs/image {count_macs(model) / 1e6:.2f} M")

    gen = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = (len(xtr) + args.batch_size - 1) // args.batch_size
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch, pct_start=0.25
    )
    lossf = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    for ep in range(args.epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(len(xtr), generator=gen)
        tot = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            xb = augment(xtr[idx], gen)
            loss = lossf(model(xb), ytr_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        acc = evaluate(model, xte, yte_t)
        print(
            f"epoch {ep + 1}/{args.epochs} loss {tot / len(xtr):.4f} test acc {acc:.4f} "
            f"({time.time() - t0:.0f}s)",
            flush=True,
        )

    torch_acc = evaluate(model, xte, yte_t)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "fmnist_resnet.onnx"
    export_onnx(model, onnx_path)
    m = onnx.load(str(onnx_path))
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print("onnx ops:", dict(sorted(ops.items())))

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    xte_np = xte.numpy()
    logits = np.concatenate(
        [sess.run(["logits"], {"input": xte_np[i : i + 1000]})[0] for i in range(0, len(xte_np), 1000)]
    )
    model.eval()
    with torch.no_grad():
        ref = torch.cat([model(xte[i : i + 1000]) for i in range(0, len(xte), 1000)]).numpy()
    diff = float(np.abs(logits - ref).max())
    ort_acc = float((logits.argmax(1) == yte).mean())
    print(f"ORT vs torch max abs diff {diff:.3g}; test accuracy torch {torch_acc:.4f} ORT {ort_acc:.4f}")
    if diff > 1e-4:
        raise SystemExit(f"ORT/torch mismatch {diff}")
    if ort_acc < 0.90:
        raise SystemExit(f"test accuracy {ort_acc:.4f} < 0.90")

    # Calibration set: first 512 of a fixed-seed permutation of the training set.
    perm = np.random.default_rng(args.seed).permutation(len(xtr_u8))[:512]
    np.savez_compressed(
        out / "fmnist_calib.npz", input=normalize(xtr_u8[perm]), labels=ytr[perm].astype(np.int64)
    )
    eval_path = out / "fmnist_eval.npz"
    np.savez_compressed(eval_path, input=xte_np, labels=yte.astype(np.int64))
    if eval_path.stat().st_size > EVAL_FLOAT_LIMIT:
        print(f"float eval set is {eval_path.stat().st_size / 2**20:.1f} MB > 12 MB: storing uint8 pixels")
        np.savez_compressed(eval_path, pixels=xte_u8, labels=yte.astype(np.int64))
    for p in (onnx_path, out / "fmnist_calib.npz", eval_path):
        print(f"{p.name}: {p.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
