"""The lecture's networks, each written once as a PyTorch user writes it.

Every builder takes `lib` (torch or nutshell) and uses only lib, lib.nn and
lib.nn.functional, so the same code builds the PyTorch model and the nutshell
one. A System bundles a network with its data, its loss (a callable written with
tensor ops, or F's) and its optimizer; tests/test_lecture_parity.py trains both
and compares, benchmarks/lecture_steps.py times both. Sizes are small so that a
test compiles and runs in seconds."""
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class System:
    """build(lib) -> module; data(rng) -> (inputs tuple, target or tuple of targets);
    loss(lib) -> (output, target) -> scalar; optimizer: (name, kwargs) for
    ns.optim / torch.optim."""
    name: str
    build: Callable
    data: Callable
    loss: Callable
    optimizer: tuple


# ---- U-Net segmentation: skip connections by cat, ConvTranspose2d and Upsample ----------

CLASSES = 3


def unet(lib):
    nn = lib.nn

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1, self.enc2, self.bottom = block(3, 8), block(8, 16), block(16, 16)
            self.pool = nn.MaxPool2d(2)
            self.up2 = nn.ConvTranspose2d(16, 16, 2, stride=2)
            self.dec2 = block(32, 8)
            self.up1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                     nn.Conv2d(8, 8, 1))
            self.dec1 = block(16, 8)
            self.head = nn.Conv2d(8, CLASSES, 1)

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(self.pool(e1))
            b = self.bottom(self.pool(e2))
            d2 = self.dec2(lib.cat([self.up2(b), e2], dim=1))
            d1 = self.dec1(lib.cat([self.up1(d2), e1], dim=1))
            return self.head(d1)                       # [N, C, H, W] logits
    return UNet()


def _unet_data(rng):
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    return (x,), rng.integers(0, CLASSES, (2, 16, 16)).astype(np.int64)


# ---- denoising autoencoder -------------------------------------------------------------

def autoencoder(lib):
    nn = lib.nn

    class DenoisingAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
                                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
            self.decoder = nn.Sequential(
                nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
                nn.ConvTranspose2d(8, 1, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid())

        def forward(self, x):
            return self.decoder(self.encoder(x))
    return DenoisingAE()


def _autoencoder_data(rng):
    clean = rng.random((4, 1, 16, 16)).astype(np.float32)
    noisy = (clean + 0.3 * rng.standard_normal(clean.shape)).astype(np.float32)
    return (noisy,), clean


# ---- DCGAN: generator and discriminator, trained by two trainers -----------------------

Z = 8


def dcgan(lib):
    """(generator, discriminator): 8-dim noise -> 1x16x16 images -> one logit."""
    nn = lib.nn
    g = nn.Sequential(nn.ConvTranspose2d(Z, 16, 4, 1, 0, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.ConvTranspose2d(16, 8, 4, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.ConvTranspose2d(8, 1, 4, 2, 1, bias=False), nn.Tanh())
    d = nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
                      nn.Conv2d(8, 16, 4, 2, 1, bias=False), nn.BatchNorm2d(16), nn.LeakyReLU(0.2),
                      nn.Conv2d(16, 1, 4, 1, 0, bias=False), nn.Flatten())
    return g, d


def gan_steps(lib, g, d):
    """The two training modules of the usual loop: D on detached fakes and reals; G through D."""
    nn = lib.nn

    class DiscriminatorStep(nn.Module):
        def __init__(self):
            super().__init__()
            self.g, self.d = g, d

        def forward(self, z, real):
            return self.d(self.g(z).detach()), self.d(real)

    class GeneratorStep(nn.Module):
        def __init__(self):
            super().__init__()
            self.g, self.d = g, d

        def forward(self, z):
            return self.d(self.g(z))
    return DiscriminatorStep(), GeneratorStep()


def gan_losses(lib):
    bce = lib.nn.functional.binary_cross_entropy_with_logits
    return (lambda out, t: bce(out[0], t[0]) + bce(out[1], t[1])), bce


def gan_data(rng, n=4):
    z = rng.standard_normal((n, Z, 1, 1)).astype(np.float32)
    real = np.tanh(rng.standard_normal((n, 1, 16, 16))).astype(np.float32)
    return z, real, np.zeros((n, 1), np.float32), np.ones((n, 1), np.float32)


GAN_OPTIMIZER = ("adam", {"lr": 2e-3, "betas": (0.5, 0.999)})


# ---- Transformer translation -----------------------------------------------------------

VOCAB, D_MODEL, PAD = 13, 16, 0


def translator(lib):
    nn = lib.nn

    class PositionalEncoding(nn.Module):
        def __init__(self, max_len=16):
            super().__init__()
            position = lib.arange(max_len).unsqueeze(1)
            div_term = lib.exp(lib.arange(0, D_MODEL, 2) * (-math.log(10000.0) / D_MODEL))
            pe = lib.zeros(max_len, D_MODEL)
            pe[:, 0::2] = lib.sin(position * div_term)
            pe[:, 1::2] = lib.cos(position * div_term)
            self.register_buffer("pe", pe)

        def forward(self, x):
            return x + self.pe[:x.size(1)]

    class Translator(nn.Module):
        def __init__(self):
            super().__init__()
            self.src_embed = nn.Embedding(VOCAB, D_MODEL, padding_idx=PAD)
            self.tgt_embed = nn.Embedding(VOCAB, D_MODEL, padding_idx=PAD)
            self.pos = PositionalEncoding()
            self.encoder = nn.TransformerEncoderLayer(D_MODEL, 2, 32, dropout=0.0, batch_first=True)
            self.decoder = nn.TransformerDecoderLayer(D_MODEL, 2, 32, dropout=0.0, batch_first=True)
            self.out = nn.Linear(D_MODEL, VOCAB)

        def forward(self, src, tgt_in):
            scale = math.sqrt(D_MODEL)
            pad = src == PAD                            # padded source tokens are not attended to
            memory = self.encoder(self.pos(self.src_embed(src) * scale), src_key_padding_mask=pad)
            T = tgt_in.size(1)
            causal = lib.triu(lib.ones(T, T), diagonal=1) == 1     # True: a later token, hidden
            x = self.decoder(self.pos(self.tgt_embed(tgt_in) * scale), memory, tgt_mask=causal,
                             tgt_key_padding_mask=tgt_in == PAD, memory_key_padding_mask=pad)
            return self.out(x)                          # [N, T, VOCAB]
    return Translator()


def nn_transformer(lib):
    """The same task through nn.Transformer and its generate_square_subsequent_mask."""
    nn = lib.nn

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, D_MODEL)
            self.pos = nn.Parameter(lib.zeros(1, 8, D_MODEL))        # learned positions
            self.transformer = nn.Transformer(D_MODEL, 2, 1, 1, 32, dropout=0.0, batch_first=True)
            self.out = nn.Linear(D_MODEL, VOCAB)

        def forward(self, src, tgt_in):
            causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.size(1))
            x = self.transformer(self.embed(src) + self.pos[:, :src.size(1)],
                                 self.embed(tgt_in) + self.pos[:, :tgt_in.size(1)], tgt_mask=causal)
            return self.out(x)
    return Seq2Seq()


def _translation_loss(lib):
    F = lib.nn.functional
    return lambda logits, tgt_out: F.cross_entropy(logits.reshape(-1, VOCAB), tgt_out.reshape(-1),
                                                   ignore_index=PAD)


def _translation_data(rng):
    src = rng.integers(1, VOCAB, (3, 6)).astype(np.int64)
    tgt = rng.integers(1, VOCAB, (3, 6)).astype(np.int64)
    src[0, 4:], tgt[0, 5:] = PAD, PAD                   # a shorter pair, padded
    return (src, tgt[:, :-1].copy()), tgt[:, 1:].copy()


# ---- LSTM sequence classification ------------------------------------------------------

def lstm_classifier(lib):
    nn = lib.nn

    class SequenceClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 12, num_layers=2, batch_first=True)
            self.head = nn.Linear(12, 3)

        def forward(self, x):
            out, (h, c) = self.lstm(x)
            return self.head(out[:, -1])
    return SequenceClassifier()


def _lstm_data(rng):
    return (rng.standard_normal((4, 7, 4)).astype(np.float32),), rng.integers(0, 3, 4).astype(np.int64)


# ---- box regression with a GIoU loss ---------------------------------------------------

def box_regressor(lib):
    nn = lib.nn

    class BoxRegressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
                                          nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten())
            self.head = nn.Linear(8 * 4 * 4, 4)

        def forward(self, x):
            raw = self.head(self.features(x))
            centre, size = raw[:, :2].sigmoid(), raw[:, 2:].exp() * 0.3
            return lib.cat([centre - size / 2, centre + size / 2], dim=1)   # x1, y1, x2, y2
    return BoxRegressor()


def giou_loss(lib):
    def loss(pred, target):
        px1, py1, px2, py2 = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
        tx1, ty1, tx2, ty2 = target[:, 0], target[:, 1], target[:, 2], target[:, 3]
        inter = ((lib.minimum(px2, tx2) - lib.maximum(px1, tx1)).clamp(min=0)
                 * (lib.minimum(py2, ty2) - lib.maximum(py1, ty1)).clamp(min=0))
        union = (px2 - px1) * (py2 - py1) + (tx2 - tx1) * (ty2 - ty1) - inter
        hull = ((lib.maximum(px2, tx2) - lib.minimum(px1, tx1))
                * (lib.maximum(py2, ty2) - lib.minimum(py1, ty1)))
        giou = inter / union - (hull - union) / hull
        return (1 - giou).mean()
    return loss


def _box_data(rng):
    x = rng.standard_normal((6, 1, 16, 16)).astype(np.float32)
    centre = rng.uniform(0.3, 0.7, (6, 2))
    size = rng.uniform(0.1, 0.4, (6, 2))
    return (x,), np.concatenate([centre - size / 2, centre + size / 2], 1).astype(np.float32)


# ---- imputation of missing pixels: image and mask in, masked MSE -----------------------

def imputer(lib):
    nn = lib.nn

    class Imputer(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))

        def forward(self, image, mask):
            filled = self.net(lib.cat([image * mask, mask], dim=1))
            return image * mask + filled * (1 - mask)       # known pixels kept
    return Imputer()


def masked_mse(lib):
    def loss(out, target):
        clean, mask = target
        missing = 1 - mask
        return ((out - clean) ** 2 * missing).sum() / missing.sum()
    return loss


def _imputation_data(rng):
    clean = rng.random((4, 1, 12, 12)).astype(np.float32)
    mask = (rng.random(clean.shape) < 0.7).astype(np.float32)
    return (clean * mask, mask), (clean, mask)


def _builtin(name):
    return lambda lib: getattr(lib.nn.functional, name)


SYSTEMS = {s.name: s for s in [
    System("unet", unet, _unet_data, _builtin("cross_entropy"), ("sgd", {"lr": 0.1, "momentum": 0.9})),
    System("autoencoder", autoencoder, _autoencoder_data, _builtin("mse_loss"), ("adam", {"lr": 1e-2})),
    System("translation", translator, _translation_data, _translation_loss,
           ("sgd", {"lr": 0.1, "momentum": 0.9})),
    System("nn_transformer", nn_transformer, _translation_data, _translation_loss,
           ("sgd", {"lr": 0.1, "momentum": 0.9})),
    System("lstm", lstm_classifier, _lstm_data, _builtin("cross_entropy"), ("adam", {"lr": 1e-2})),
    System("giou_boxes", box_regressor, _box_data, giou_loss, ("adam", {"lr": 1e-2})),
    System("imputation", imputer, _imputation_data, masked_mse, ("adam", {"lr": 1e-2})),
]}
