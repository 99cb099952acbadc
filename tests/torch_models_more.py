"""More models as PyTorch users write them (tests/test_torch_models_more.py); `lib` is torch or nutshell."""
import math
from collections import OrderedDict


def resnet_cifar(lib):
    nn, F = lib.nn, lib.nn.functional

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inp, planes, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Sequential()
            if stride != 1 or inp != planes:
                self.shortcut = nn.Sequential(nn.Conv2d(inp, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += self.shortcut(x)
            return F.relu(out)

    class ResNet(nn.Module):
        def __init__(self, num_classes=5):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(4)
            self.layer1 = nn.Sequential(BasicBlock(4, 4), BasicBlock(4, 8, 2))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer1(out)
            out = self.avgpool(out)
            out = torch_flatten(lib, out)
            return self.fc(out)
    return ResNet()


def torch_flatten(lib, x):
    return lib.flatten(x, 1)


def vae(lib):
    nn, F = lib.nn, lib.nn.functional

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(12, 8)
            self.fc21, self.fc22 = nn.Linear(8, 3), nn.Linear(8, 3)
            self.fc3, self.fc4 = nn.Linear(3, 8), nn.Linear(8, 12)

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar):
            std = lib.exp(0.5 * logvar)
            eps = lib.randn_like(std)
            return mu + eps * std

        def decode(self, z):
            return lib.sigmoid(self.fc4(F.relu(self.fc3(z))))

        def forward(self, x):
            mu, logvar = self.encode(x.view(-1, 12))
            z = self.reparameterize(mu, logvar)
            return self.decode(z), mu, logvar
    return VAE()


def vae_loss(lib, out, x):
    recon, mu, logvar = out
    F = lib.nn.functional
    bce = F.binary_cross_entropy(recon, x.view(-1, 12), reduction="sum")
    kld = -0.5 * lib.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def seq2seq(lib, vocab=7, hid=6):
    nn, F = lib.nn, lib.nn.functional

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, hid)
            self.gru = nn.GRU(hid, hid, batch_first=True)

        def forward(self, src):
            out, hidden = self.gru(self.embedding(src))
            return out, hidden

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, hid)
            self.gru = nn.GRU(hid, hid, batch_first=True)
            self.out = nn.Linear(hid, vocab)

        def forward(self, tgt, hidden):
            out, hidden = self.gru(F.relu(self.embedding(tgt)), hidden)
            return self.out(out), hidden

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = Encoder(), Decoder()

        def forward(self, src, tgt):
            _, hidden = self.encoder(src)
            logits, _ = self.decoder(tgt, hidden)
            return logits
    return Seq2Seq()


def vit_tiny(lib, img=8, patch=4, dim=8, heads=2, classes=3):
    nn, F = lib.nn, lib.nn.functional
    n = (img // patch) ** 2

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(dim, dim * 3)
            self.proj = nn.Linear(dim, dim)
            self.scale = (dim // heads) ** -0.5

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            x = (attn @ v).transpose(1, 2).reshape(B, N, C)
            return self.proj(x)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.attn = nn.LayerNorm(dim), Attention()
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
            self.cls_token = nn.Parameter(lib.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(lib.randn(1, n + 1, dim) * .02)
            self.blocks = nn.Sequential(*[Block() for _ in range(2)])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, classes)
            nn.init.trunc_normal_(self.pos_embed, std=.02)
            nn.init.normal_(self.cls_token, std=1e-2)
            self.apply(self._init_weights)

        def _init_weights(self, m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

        def forward(self, x):
            x = self.patch_embed(x).flatten(2).transpose(1, 2)
            cls = self.cls_token.expand(x.shape[0], -1, -1)
            x = lib.cat((cls, x), dim=1) + self.pos_embed
            x = self.norm(self.blocks(x))
            return self.head(x[:, 0])
    return ViT()


def text_classifier(lib, vocab=10, dim=6, classes=3):
    nn, F = lib.nn, lib.nn.functional

    class TextClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
            self.fc = nn.Linear(dim, classes)
            self.init_weights()

        def init_weights(self):
            initrange = 0.5
            self.embedding.weight.data.uniform_(-initrange, initrange)
            self.fc.weight.data.uniform_(-initrange, initrange)
            self.fc.bias.data.zero_()

        def forward(self, text):
            mask = (text != 0).unsqueeze(-1).float()
            emb = self.embedding(text) * mask
            pooled = emb.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            return self.fc(pooled)
    return TextClassifier()


def siamese(lib):
    nn, F = lib.nn, lib.nn.functional

    class Siamese(nn.Module):
        def __init__(self):
            super().__init__()
            self.cnn = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(1, 4, 3, padding=1)),
                ("relu", nn.ReLU(inplace=True)),
                ("drop", nn.Dropout2d(0.2)),
                ("pool", nn.MaxPool2d(2)),
            ]))
            self.fc = nn.Linear(4 * 3 * 3, 5)

        def forward_once(self, x):
            out = self.cnn(x)
            out = out.view(out.size(0), -1)
            return self.fc(out)

        def forward(self, a, b):
            return self.forward_once(a), self.forward_once(b)
    return Siamese()


def contrastive_loss(lib, out, label, margin=1.0):
    F = lib.nn.functional
    o1, o2 = out
    d = F.pairwise_distance(o1, o2, keepdim=True)
    return lib.mean((1 - label) * lib.pow(d, 2) + label * lib.pow(lib.clamp(margin - d, min=0.0), 2))


def cosine_head(lib):
    nn, F = lib.nn, lib.nn.functional

    class CosineNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(6, 4)

        def forward(self, a, b):
            sim = F.cosine_similarity(self.enc(a), self.enc(b), dim=1)
            return sim

    return CosineNet()


def misc_ops(lib):
    nn, F = lib.nn, lib.nn.functional

    class Misc(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.lin = nn.Linear(2, 3)

        def forward(self, x, seq):
            y = F.adaptive_avg_pool2d(self.conv(x), 1)
            a, b = y.chunk(2, dim=1)
            y = (a * b).view(x.size(0), -1)
            s = seq @ seq.transpose(1, 2)
            s = lib.bmm(s, seq)
            mask = lib.tril(lib.ones(seq.size(1), seq.size(1)))
            att = s.new_zeros(1) + (seq @ seq.transpose(1, 2)).masked_fill(mask == 0, float("-inf"))
            out = lib.bmm(F.softmax(att, dim=-1), self.lin(s))
            return y.sum(1, keepdim=True) + out.mean((1, 2)).unsqueeze(1)
    return Misc()
