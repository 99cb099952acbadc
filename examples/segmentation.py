"""Semantic segmentation: a small U-Net (max-pooling down, ConvTranspose2d up,
skip connections joined with ns.cat, torch.cat's twin) labels every pixel of synthetic
32x32 pictures as background, disc, square or triangle. Shapes overlap and sit on
a noisy background of random brightness, so a threshold will not do: the net must
tell shapes apart by their form. Prints the per-class IoU on held-out pictures
(expected: mean IoU 0.90 after the default run, 200 steps, 43 s of CPU) and saves
pictures, masks and predictions.

    python examples/segmentation.py [--quick] [--plot segmentation.png]"""
import numpy as np

import nutshell as ns
from _common import parse, plt, save
from _metrics import per_class_iou

nn, F = ns.nn, ns.nn.functional
CLASSES = ["background", "disc", "square", "triangle"]
SIZE = 32


def shapes(n, rng):
    """n noisy pictures [n,1,32,32] and their masks [n,32,32] of class indices."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = rng.uniform(0, 0.3, (n, 1, 1, 1)) + 0.15 * rng.standard_normal((n, 1, SIZE, SIZE))
    masks = np.zeros((n, SIZE, SIZE), np.int64)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            kind, r = rng.integers(1, 4), rng.integers(4, 9)
            cy, cx = rng.integers(r, SIZE - r, 2)
            if kind == 1:
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            elif kind == 2:
                inside = (abs(yy - cy) <= r * 0.8) & (abs(xx - cx) <= r * 0.8)
            else:                                     # apex up, base at cy + r
                inside = (yy <= cy + r) & (abs(xx - cx) <= (yy - (cy - r)) / 2)
            masks[i][inside] = kind
            images[i, 0][inside] = rng.uniform(0.6, 1.0)
    return images.astype(np.float32), masks


def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    def __init__(self, classes=4, width=16):
        super().__init__()
        self.enc1, self.enc2 = block(1, width), block(width, 2 * width)
        self.bottom = block(2 * width, 4 * width)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = block(4 * width, 2 * width)
        self.up1 = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec1 = block(2 * width, width)
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)                             # 32x32
        e2 = self.enc2(self.pool(e1))                 # 16x16
        b = self.bottom(self.pool(e2))                # 8x8
        d2 = self.dec2(ns.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(ns.cat([self.up1(d2), e1], dim=1))
        return self.head(d1)                          # logits [N, classes, 32, 32]


def main():
    args = parse(__doc__, "segmentation.png")
    rng = np.random.default_rng(0)
    n_train, epochs = (64, 1) if args.quick else (1280, 5)
    x, y = shapes(n_train, rng)
    xv, yv = shapes(64 if args.quick else 500, rng)
    ns.manual_seed(0)
    net = UNet()
    trainer = ns.compile_training(net, example_inputs=x[:32], example_targets=y[:32],
                                  loss="cross_entropy", optimizer=ns.optim.Adam(lr=3e-3),
                                  threads=args.threads)
    trainer.fit(x, y, epochs=epochs, batch_size=32, progress=False, log=print)
    pred = trainer.predict(xv).argmax(1)
    iou = per_class_iou(pred, yv, len(CLASSES))
    print("IoU " + ", ".join(f"{c} {v:.3f}" for c, v in zip(CLASSES, iou)) + f"; mean IoU {iou.mean():.3f}")
    fig, axes = plt.subplots(3, 6, figsize=(10, 5.4))
    for j in range(6):
        for ax, img, title in zip(axes[:, j], (xv[j, 0], yv[j], pred[j]), ("picture", "truth", "predicted")):
            ax.imshow(img, cmap="gray" if title == "picture" else "viridis",
                      **({} if title == "picture" else {"vmin": 0, "vmax": 3}))
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle(f"U-Net segmentation, mean IoU {iou.mean():.3f} (0 background, 1 disc, 2 square, 3 triangle)")
    save(fig, args.plot)


if __name__ == "__main__":
    main()
