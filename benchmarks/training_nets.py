"""The lecture's larger networks for benchmarks/training.py, written once against
`lib` (torch or nutshell: only lib, lib.nn and lib.nn.functional are used), so
both libraries train the same code from the same weights.

Each builder returns (module, example inputs, example targets) as NumPy arrays:
inputs a tuple (one entry per forward argument), targets class ids."""
import numpy as np


def cnn_bn(m):
    """The CNN+BN net of training.py and distributed.py (m: torch.nn or ns.nn), 3x32x32 in."""
    return m.Sequential(m.Conv2d(3, 32, 3, padding=1), m.BatchNorm2d(32), m.ReLU(),
                        m.Conv2d(32, 32, 3, padding=1), m.BatchNorm2d(32), m.ReLU(), m.MaxPool2d(2),
                        m.Conv2d(32, 64, 3, padding=1), m.BatchNorm2d(64), m.ReLU(),
                        m.Conv2d(64, 64, 3, padding=1), m.BatchNorm2d(64), m.ReLU(), m.MaxPool2d(2),
                        m.Flatten(), m.Linear(64 * 8 * 8, 10))


def resnet18_cifar(lib, batch=32, classes=10):
    """ResNet-18 for 32x32 images: a 3x3 stem, no max-pool, [2, 2, 2, 2] basic blocks."""
    nn, F = lib.nn, lib.nn.functional

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                              nn.BatchNorm2d(cout))

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            blocks, cin = [], 64
            for cout, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1),
                                 (512, 2), (512, 1)):
                blocks.append(Block(cin, cout, stride))
                cin = cout
            self.layers = nn.Sequential(*blocks)
            self.fc = nn.Linear(512, classes)

        def forward(self, x):
            y = self.layers(F.relu(self.bn1(self.conv1(x))))
            return self.fc(lib.flatten(F.adaptive_avg_pool2d(y, 1), 1))

    rng = np.random.default_rng(0)
    return (ResNet18(), (rng.standard_normal((batch, 3, 32, 32)).astype(np.float32),),
            rng.integers(0, classes, batch))


def unet(lib, batch=8, size=64, classes=2):
    """A 3-level U-Net (32-64-128 channels), ConvTranspose up-sampling, per-pixel classes."""
    nn = lib.nn

    def double(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.down1, self.down2, self.bottom = double(3, 32), double(32, 64), double(64, 128)
            self.pool = nn.MaxPool2d(2)
            self.up2, self.dec2 = nn.ConvTranspose2d(128, 64, 2, stride=2), double(128, 64)
            self.up1, self.dec1 = nn.ConvTranspose2d(64, 32, 2, stride=2), double(64, 32)
            self.head = nn.Conv2d(32, classes, 1)

        def forward(self, x):
            d1 = self.down1(x)
            d2 = self.down2(self.pool(d1))
            b = self.bottom(self.pool(d2))
            u2 = self.dec2(lib.cat([self.up2(b), d2], 1))
            u1 = self.dec1(lib.cat([self.up1(u2), d1], 1))
            return self.head(u1)

    rng = np.random.default_rng(0)
    return (UNet(), (rng.standard_normal((batch, 3, size, size)).astype(np.float32),),
            rng.integers(0, classes, (batch, size, size)))


def translator(lib, batch=32, length=32, vocab=1000, d=128, heads=4, layers=2):
    """An encoder-decoder Transformer over token ids; logits come out as (N, vocab, T)
    so that cross_entropy's class dimension is 1 in both libraries."""
    nn = lib.nn

    class Translator(nn.Module):
        def __init__(self):
            super().__init__()
            self.src_embed, self.tgt_embed = nn.Embedding(vocab, d), nn.Embedding(vocab, d)
            self.pos = nn.Parameter(lib.zeros(1, length, d))
            self.encoder = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True), layers)
            self.decoder = nn.TransformerDecoder(
                nn.TransformerDecoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True), layers)
            self.out = nn.Linear(d, vocab)
            self.register_buffer("causal", lib.triu(lib.ones(length, length), 1) * -1e9)

        def forward(self, src, tgt):
            memory = self.encoder(self.src_embed(src) + self.pos)
            y = self.decoder(self.tgt_embed(tgt) + self.pos, memory, tgt_mask=self.causal)
            return self.out(y).transpose(1, 2)

    rng = np.random.default_rng(0)
    src, tgt = (rng.integers(0, vocab, (batch, length + 1)) for _ in range(2))
    return Translator(), (src[:, :length], tgt[:, :length]), tgt[:, 1:]


def lstm_classifier(lib, batch=32, length=50, features=64, hidden=128, classes=10):
    """One LSTM layer over a sequence, its last hidden state classified."""
    nn = lib.nn

    class LSTMNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(features, hidden, batch_first=True)
            self.fc = nn.Linear(hidden, classes)

        def forward(self, x):
            out, (h, c) = self.lstm(x)
            return self.fc(h[0])

    rng = np.random.default_rng(0)
    return (LSTMNet(), (rng.standard_normal((batch, length, features)).astype(np.float32),),
            rng.integers(0, classes, batch))
