"""Transformer translation, toy language pair: a sentence of digits is
"translated" by writing it backwards, so every output word depends on a
far-away input word (what attention is for). An encoder-decoder Transformer
(nn.TransformerEncoder/Decoder, learned position embeddings, a causal mask on
the decoder) is trained with teacher forcing, then translates held-out
sentences greedily, one word at a time. Prints the exact-match accuracy of whole
sentences (expected: 1.000 after the default run of 1,500 steps, 21 s of CPU) and saves
sources beside their translations.

    python examples/transformer_translation.py [--quick] [--plot transformer_translation.png]"""
import numpy as np

import nutshell as ns
from _common import parse, plt, save

nn, F = ns.nn, ns.nn.functional
PAD, BOS, DIGITS = 0, 1, 10          # tokens: 0 padding, 1 start, 2..11 the digits 0..9
VOCAB, LENGTH = 2 + DIGITS, 8


def sentences(n, rng):
    """(source, decoder input, decoder target) token ids, each [n, LENGTH]."""
    src = rng.integers(2, VOCAB, (n, LENGTH))
    tgt = src[:, ::-1]
    tgt_in = np.concatenate([np.full((n, 1), BOS), tgt[:, :-1]], axis=1)
    return src, tgt_in, np.ascontiguousarray(tgt)


class Translator(nn.Module):
    def __init__(self, d_model=64, nhead=4, layers=2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d_model)
        self.position = nn.Embedding(LENGTH, d_model)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d_model, nhead, 128, dropout=0.0, batch_first=True), layers)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d_model, nhead, 128, dropout=0.0, batch_first=True), layers)
        self.out = nn.Linear(d_model, VOCAB)

    def embed_words(self, ids):
        return self.embed(ids) + self.position(ns.arange(ids.shape[1]))

    def forward(self, src, tgt_in):
        memory = self.encoder(self.embed_words(src))
        causal = ns.triu(ns.full((LENGTH, LENGTH), float("-inf")), diagonal=1)
        h = self.decoder(self.embed_words(tgt_in), memory, tgt_mask=causal)
        return self.out(h).transpose(1, 2)            # [N, VOCAB, LENGTH] for cross_entropy


def translate(trainer, src):
    """Greedy decoding: feed the words chosen so far, take the next one."""
    tgt_in = np.zeros_like(src)
    tgt_in[:, 0] = BOS
    for t in range(LENGTH):
        words = trainer.predict((src, tgt_in)).argmax(1)[:, t]
        if t + 1 < LENGTH:
            tgt_in[:, t + 1] = words
    return np.concatenate([tgt_in[:, 1:], words[:, None]], axis=1)


def main():
    args = parse(__doc__, "transformer_translation.png")
    rng = np.random.default_rng(0)
    src, tgt_in, tgt = sentences(50000, rng)
    vsrc, _, vtgt = sentences(64 if args.quick else 500, rng)
    ns.manual_seed(0)
    net = Translator()
    batch = 64
    trainer = ns.compile_training(net, example_inputs=(src[:batch], tgt_in[:batch]),
                                  example_targets=tgt[:batch], loss="cross_entropy",
                                  optimizer=ns.optim.Adam(lr=1e-3), threads=args.threads)
    steps = 10 if args.quick else 1500
    for step in range(steps):
        idx = rng.integers(0, len(src), batch)
        loss = trainer.step((src[idx], tgt_in[idx]), tgt[idx])
        if step % 250 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss:.4f}")
    out = translate(trainer, vsrc)
    exact = np.mean((out == vtgt).all(axis=1))
    print(f"word accuracy {np.mean(out == vtgt):.3f}; exact-match accuracy {exact:.3f}")
    for s, o in zip(vsrc[:3], out[:3]):
        print(" ".join(str(t - 2) for t in s), "->", " ".join(str(t - 2) for t in o))
    fig, ax = plt.subplots(1, 2, figsize=(9, 4))
    for a, ids, title in ((ax[0], vsrc[:12], "held-out sources"), (ax[1], out[:12], "translations (reversed)")):
        a.imshow(ids - 2, cmap="tab10", vmin=0, vmax=9)
        for (i, j), t in np.ndenumerate(ids - 2):
            a.text(j, i, str(t), ha="center", va="center", fontsize=8, color="white")
        a.set(title=title, xticks=[], yticks=[])
    fig.suptitle(f"Transformer sequence reversal: exact match {exact:.3f}")
    save(fig, args.plot)


if __name__ == "__main__":
    main()
