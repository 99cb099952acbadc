"""Models written as PyTorch users write them, built for either library: each
builder takes `lib` (torch or nutshell) and uses only lib, lib.nn and
lib.nn.functional, so the same code runs under both."""
import math

import nutshell as ns


def tiny_gpt(lib, vocab=7, d=8, heads=2, T=5):
    """Model code as a PyTorch user writes it; `lib` is torch or nutshell."""
    nn, F = lib.nn, lib.nn.functional

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.register_buffer("mask", lib.tril(lib.ones(T, T)))

        def forward(self, x):
            B, L, C = x.shape
            q, k, v = self.qkv(x).split(C, dim=2)
            q, k, v = (z.view(B, L, heads, C // heads).transpose(1, 2) for z in (q, k, v))
            att = (q @ k.transpose(-2, -1)) * (1.0 / (C // heads) ** 0.5)
            att = att.masked_fill(self.mask[:L, :L] == 0, float("-inf"))
            y = F.softmax(att, dim=-1) @ v
            return self.proj(y.transpose(1, 2).contiguous().view(B, L, C))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(lib.zeros(1, T, d))
            self.attn, self.norm = Attention(), nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab, bias=False)

        def forward(self, ids, targets):
            x = self.tok(ids) + self.pos[:, :ids.size(1)]
            x = x + self.attn(self.norm(x))
            logits = self.head(F.gelu(x))
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            return logits, loss
    return GPT()



def positional_encoding(lib, d_model=6, max_len=10):
    """The PyTorch tutorial's sinusoidal table, built in __init__ with torch ops
    (eager tensors under nutshell), one copy a buffer and one a plain attribute."""
    import math

    class PositionalEncoding(lib.nn.Module):
        def __init__(self):
            super().__init__()
            position = lib.arange(max_len).unsqueeze(1)
            div_term = lib.exp(lib.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
            pe = lib.zeros(max_len, 1, d_model)
            pe[:, 0, 0::2] = lib.sin(position * div_term)
            pe[:, 0, 1::2] = lib.cos(position * div_term)
            self.register_buffer("pe", pe)
            self.scale = lib.ones(d_model) * 0.5 + lib.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])

        def forward(self, x):
            return x + self.pe[:x.size(0)] * self.scale
    return PositionalEncoding()



def small_net(lib):
    nn = lib.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(),
                                          nn.MaxPool2d(2), nn.Dropout(0.1))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 4 * 4, 10), nn.LeakyReLU(0.2))

        def forward(self, x):
            return self.head(self.features(x))
    return Net()



class PicklableNet(ns.nn.Module):      # pickle finds classes by module-level name
    def __init__(self):
        super().__init__()
        self.body = small_net(ns).features
        self.scale = ns.nn.Parameter(ns.ones(6, 1, 1))

    def forward(self, x):
        return self.body(x) * self.scale



def mlp(lib):
    nn, F = lib.nn, lib.nn.functional

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 4)
            self.gain = nn.Parameter(lib.ones(16))

        def forward(self, x):
            return self.fc2(F.silu(self.fc1(x)) * self.gain)
    return MLP()



def nano_gpt(lib, vocab=11, n_embd=16, n_head=2, n_layer=2, block=8):
    """Karpathy's nanoGPT model code (flash attention path), shrunk: ModuleDict,
    ModuleList, weight tying, apply(_init_weights), a (logits, loss) result."""
    nn, F = lib.nn, lib.nn.functional

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn, self.c_proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(n_embd, dim=2)
            k = k.view(B, T, n_head, C // n_head).transpose(1, 2)
            q = q.view(B, T, n_head, C // n_head).transpose(1, 2)
            v = v.view(B, T, n_head, C // n_head).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc, self.gelu = nn.Linear(n_embd, 4 * n_embd), nn.GELU()
            self.c_proj = nn.Linear(4 * n_embd, n_embd)

        def forward(self, x):
            return self.c_proj(self.gelu(self.c_fc(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn = nn.LayerNorm(n_embd), CausalSelfAttention()
            self.ln_2, self.mlp = nn.LayerNorm(n_embd), MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(vocab, n_embd), wpe=nn.Embedding(block, n_embd),
                h=nn.ModuleList([Block() for _ in range(n_layer)]), ln_f=nn.LayerNorm(n_embd)))
            self.lm_head = nn.Linear(n_embd, vocab, bias=False)
            self.transformer.wte.weight = self.lm_head.weight
            self.apply(self._init_weights)
            for pn, p in self.named_parameters():
                if pn.endswith("c_proj.weight"):
                    lib.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                lib.nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    lib.nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                lib.nn.init.normal_(module.weight, mean=0.0, std=0.02)

        def forward(self, idx, targets=None):
            b, t = idx.size()
            pos = lib.arange(0, t, dtype=lib.long, device=idx.device)
            x = self.transformer.wte(idx) + self.transformer.wpe(pos)
            for blk in self.transformer.h:
                x = blk(x)
            x = self.transformer.ln_f(x)
            if targets is not None:
                logits = self.lm_head(x)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            else:
                logits, loss = self.lm_head(x[:, [-1], :]), None
            return logits, loss
    return GPT()
